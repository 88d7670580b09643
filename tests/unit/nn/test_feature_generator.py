"""The label-generation network that reads the multi-task network's (detached) features."""

import torch

from maxl.core.losses import classification_loss
from maxl.meta import MetaConfig, ObjectiveConfig, meta_gradient
from maxl.nn import FeatureLabelGenerator, MultiTaskNetwork, tiny_cnn

from tests.unit.meta.tiny import finite_difference_gradient, naive_outer_objective


def networks():
    torch.manual_seed(0)
    net = MultiTaskNetwork(tiny_cnn(1), 2, 5, hidden=4).double()
    return net, FeatureLabelGenerator(net.backbone, [2, 3], hidden=4).double()


def test_its_parameters_are_the_head_alone_and_it_never_moves_the_backbone():
    net, gen = networks()
    assert {n for n, _ in gen.named_parameters()} == {f"head.{n}" for n, _ in gen.head.named_parameters()}
    assert all(n.startswith("head.") for n in gen.state_dict())
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x, y = torch.randn(6, 1, 8, 8, dtype=torch.float64), torch.tensor([0, 1, 0, 1, 1, 0])
    soft = gen(x, y)
    soft.sum().backward()
    assert all(p.grad is None for p in net.parameters())  # no graph to θ1
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # BatchNorm statistics too
    torch.testing.assert_close(soft.sum(1), torch.ones(6, dtype=torch.float64))
    assert torch.all(soft[y == 0, 2:] == 0) and torch.all(soft[y == 1, :2] == 0)  # inside each block


def assert_meta_gradient_matches_finite_differences(net, gen):
    x, y = torch.randn(6, 1, 8, 8, dtype=torch.float64), torch.tensor([0, 1, 0, 1, 1, 0])
    loss, cfg = classification_loss("ce"), MetaConfig(inner_lr=0.5)
    grads = meta_gradient(net, gen, x, y, loss, cfg, objective=ObjectiveConfig(entropy_weight=0.3)).grads
    expected = finite_difference_gradient(
        lambda: naive_outer_objective(net, gen, x, y, loss, 0.5, 0.3), list(gen.parameters())
    )
    for g, e in zip(grads, expected):
        torch.testing.assert_close(g, e, rtol=1e-6, atol=1e-8)


def test_meta_gradient_through_it_matches_finite_differences():
    assert_meta_gradient_matches_finite_differences(*networks())


def test_with_batch_statistics_a_label_depends_on_the_batch_and_with_running_statistics_it_does_not():
    torch.manual_seed(0)
    net = MultiTaskNetwork(tiny_cnn(1), 2, 5, hidden=4).double()
    batch_gen = FeatureLabelGenerator(net.backbone, [2, 3], hidden=4).double()
    running_gen = FeatureLabelGenerator(net.backbone, [2, 3], hidden=4, running_statistics=True).double()
    running_gen.head.load_state_dict(batch_gen.head.state_dict())
    for m in net.backbone.modules():  # running statistics that differ from any batch's
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    x, y = torch.randn(8, 1, 8, 8, dtype=torch.float64), torch.tensor([0, 1, 0, 1, 1, 0, 0, 1])
    before = {k: v.clone() for k, v in net.state_dict().items()}
    net.train()
    alone = batch_gen(x[:4], y[:4])
    assert not torch.allclose(alone, batch_gen(x, y)[:4])  # batch statistics: the batch changes the labels
    running = running_gen(x, y)
    torch.testing.assert_close(running_gen(x[:4], y[:4]), running[:4])  # running statistics: it does not
    assert net.backbone.training  # the backbone's mode is restored
    net.eval()
    torch.testing.assert_close(running, batch_gen(x, y))  # and they are the eval-mode labels
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # no statistics moved


def test_the_running_statistics_generator_is_built_from_the_config_and_its_meta_gradient_is_exact():
    from maxl.train.build import make_generator

    torch.manual_seed(0)
    net = MultiTaskNetwork(tiny_cnn(1), 2, 5, hidden=4).double()
    gen = make_generator("features-running", net, "tiny-cnn", 1, True, [2, 3], 4).double()
    assert gen.running_statistics and gen.shared_backbone is net.backbone
    assert not make_generator("features", net, "tiny-cnn", 1, True, [2, 3], 4).running_statistics
    net.train()
    assert_meta_gradient_matches_finite_differences(net, gen)
