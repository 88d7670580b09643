"""The learner: a plain PyTorch loop on real (embedded digits) data, feature reuse, BatchNorm
statistics, supervised labels, and MAXL's generated labels with other tasks in the look-ahead."""

import copy

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from auxtasks import (
    WEIGHTINGS,
    AuxiliaryLearner,
    Colourisation,
    GeneratedLabels,
    Rotation,
    SupervisedLabels,
    Uncertainty,
)
from auxtasks.weighting import TorchJDWeighting
from maxl.core.losses import classification_loss, negative_entropy
from maxl.data.datasets import load_dataset
from maxl.meta import MetaConfig, meta_gradient
from maxl.nn.backbones import ConvNet, tiny_cnn
from maxl.nn.networks import LabelGenerator, MultiTaskNetwork


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", train_subset=640)


def accuracy(model, dataset):
    model.eval()
    with torch.no_grad():
        x, y = zip(*[(img, label) for img, label, _ in dataset])
        return (model.predict(torch.stack(x)).argmax(1) == torch.tensor(y)).float().mean().item()


def test_learner_in_a_plain_pytorch_loop_learns_digits(digits):
    torch.manual_seed(0)
    loader = DataLoader(digits.train, batch_size=32, shuffle=True, drop_last=True)
    # ---- the user's 10-line loop, with the learner in place of `net` -------------------
    model = AuxiliaryLearner(tiny_cnn(1), nn.Linear(32, 10), [Rotation("random", hidden=32)], Uncertainty())
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(4):
        model.train()
        for x, y, _ in loader:
            out = model(x, y)
            opt.zero_grad()
            model.backward(out)
            opt.step()
        model.end_epoch()
    # -------------------------------------------------------------------------------------
    assert accuracy(model, digits.test) > 0.7  # chance: 0.1
    assert out.losses["rotation"].item() < 1.1  # chance: log 4 = 1.39
    assert set(out.losses) == {"primary", "rotation"} and set(out.weights) == {"primary", "rotation"}


@pytest.mark.parametrize("name", sorted(WEIGHTINGS))
def test_every_weighting_updates_every_parameter(name):
    if issubclass(WEIGHTINGS[name], TorchJDWeighting):
        pytest.importorskip("torchjd", reason="the optional extra mtl: pip install 'maxl[mtl]'")
    torch.manual_seed(0)
    tasks = [Rotation("random", hidden=8), Colourisation(target_size=2)]
    given = None
    if name == "mgda-ub":  # solves on the batch's shared features: tasks on other inputs are refused
        tasks, given = [SupervisedLabels(3, hidden=8)], {"supervised": torch.randint(0, 3, (8,))}
    model = AuxiliaryLearner(tiny_cnn(3), nn.Linear(32, 3), tasks, WEIGHTINGS[name]())
    out = model(torch.rand(8, 3, 8, 8), torch.randint(0, 3, (8,)), aux_targets=given)
    model.backward(out)
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, pname


def count_calls(module):
    calls = []
    module.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    return calls


def test_tasks_on_the_batch_itself_reuse_the_primary_features():
    backbone = tiny_cnn(1)
    calls = count_calls(backbone)
    model = AuxiliaryLearner(backbone, nn.Linear(32, 4), [SupervisedLabels(3, hidden=8), Rotation(hidden=8)])
    x, y = torch.randn(5, 1, 8, 8), torch.randint(0, 4, (5,))
    out = model(x, y, aux_targets={"supervised": torch.tensor([0, 1, 2, 0, 1])})
    assert calls == [5, 20]  # the batch once (primary + supervised), its four rotations once
    assert set(out.losses) == {"primary", "supervised", "rotation"}


def test_auxiliary_inputs_leave_the_running_statistics_to_the_primary_images():
    torch.manual_seed(0)
    x, y = torch.randn(6, 3, 8, 8), torch.randint(0, 2, (6,))
    reference = tiny_cnn(3)
    plain = copy.deepcopy(reference)
    plain(x)  # the primary images alone
    model = AuxiliaryLearner(copy.deepcopy(reference), nn.Linear(32, 2), [Rotation(hidden=8), Colourisation()])
    model(x, y)
    for a, b in zip(model.backbone.buffers(), plain.buffers()):
        assert torch.equal(a, b)
    mixed = AuxiliaryLearner(copy.deepcopy(reference), nn.Linear(32, 2), [Colourisation()], aux_batchnorm_stats=True)
    mixed(x, y)
    assert not torch.equal(mixed.backbone.features[1].running_mean, plain.features[1].running_mean)


def test_supervised_labels_from_a_table_or_with_the_batch():
    table = torch.tensor([2, 0, 1, 1, 0, 2])
    task = SupervisedLabels(3, table, hidden=8)
    model = AuxiliaryLearner(tiny_cnn(1), nn.Linear(32, 2), [task])
    x, y = torch.randn(3, 1, 8, 8), torch.tensor([0, 1, 0])
    _, targets = task.make_inputs_and_targets(x, y, index=torch.tensor([5, 0, 3]))
    assert targets.tolist() == [2, 2, 1]
    out = model(x, y, index=torch.tensor([5, 0, 3]))
    logits = task(model.backbone(x))
    torch.testing.assert_close(out.losses["supervised"], nn.functional.cross_entropy(logits, targets))
    with pytest.raises(ValueError, match="index="):
        model(x, y)
    with pytest.raises(ValueError, match=r"class 3, outside \[0, 2\]"):
        SupervisedLabels(3, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="unknown tasks"):
        model(x, y, index=torch.tensor([0, 1, 2]), aux_targets={"fine": y})


def test_bad_task_lists_are_rejected():
    with pytest.raises(ValueError, match="distinct"):
        AuxiliaryLearner(tiny_cnn(1), nn.Linear(32, 2), [Rotation(), Rotation()])
    with pytest.raises(ValueError, match="feature size"):
        AuxiliaryLearner(nn.Flatten(), nn.Linear(64, 2), [Rotation()], feature_dim=0)  # unknown: test_feature_size
    model = AuxiliaryLearner(tiny_cnn(1), nn.Linear(32, 2), [Rotation()])
    with pytest.raises(ValueError, match="GeneratedLabels"):
        model.meta_gradient(torch.randn(2, 1, 8, 8), torch.tensor([0, 1]))


PSI = [2, 1, 3]


def maxl_setup(seed=0):
    torch.manual_seed(seed)
    net = MultiTaskNetwork(ConvNet(1, (3,), (1,)), len(PSI), sum(PSI), hidden=5).double()
    gen = LabelGenerator(ConvNet(1, (3,), (1,)), PSI, hidden=5).double()
    x, y = torch.randn(6, 1, 4, 4, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 2, 1])
    return net, gen, x, y


def test_generated_labels_alone_give_maxls_meta_gradient():
    net, gen, x, y = maxl_setup()
    focal = classification_loss("focal")
    cfg = MetaConfig(inner_lr=0.3)
    task = GeneratedLabels(gen, meta=cfg, loss_fn=focal, head=net.aux_head)
    learner = AuxiliaryLearner.from_multitask_network(net, [task], primary_loss=focal)
    ours = learner.meta_gradient(x, y)
    theirs = meta_gradient(net, gen, x, y, focal, cfg)
    for a, b in zip(ours.grads, theirs.grads):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_generated_labels_with_rotation_in_the_look_ahead_equal_finite_differences():
    net, gen, x, y = maxl_setup(1)
    focal = classification_loss("focal")
    alpha, lam = 0.5, 0.2
    task = GeneratedLabels(gen, meta=MetaConfig(inner_lr=alpha), loss_fn=focal, head=net.aux_head)
    learner = AuxiliaryLearner.from_multitask_network(net, [task, Rotation(hidden=4)], primary_loss=focal).double()
    state = copy.deepcopy(learner.state_dict())
    grads = learner.meta_gradient(x, y).grads
    exact = torch.cat([g.reshape(-1) for g in grads])
    for k, v in learner.state_dict().items():
        if ".generator." not in k:  # the generator's own BatchNorm statistics follow its forward passes
            assert torch.equal(v, state[k]), k

    def naive_objective():
        """J by module calls on a deep copy that takes one plain SGD step on all three losses."""
        soft = gen(x, y)
        look = copy.deepcopy(learner)
        features = look.backbone(x)
        rotated, angles = torch.cat([torch.rot90(x, k, (2, 3)) for k in range(4)]), torch.arange(4).repeat_interleave(6)
        rotation = look.tasks[1]
        inner = (
            focal(look.primary_head(features), y)
            + focal(look.tasks[0].head(features), soft)
            + nn.functional.cross_entropy(rotation(look.backbone(rotated)), angles)
        )
        stepped = [*look.backbone.parameters(), *look.primary_head.parameters(), *look.tasks[0].head.parameters()]
        g = torch.autograd.grad(inner, stepped)
        with torch.no_grad():
            for p, gi in zip(stepped, g):
                p -= alpha * gi
        return focal(look.primary_head(look.backbone(x)), y) + lam * negative_entropy(soft)

    params = list(gen.parameters())
    generator = torch.Generator().manual_seed(0)
    for _ in range(4):
        direction = [torch.randn(p.shape, generator=generator, dtype=p.dtype) for p in params]
        h = 1e-5
        values = []
        for sign in (1, -1):
            with torch.no_grad():
                for p, v in zip(params, direction):
                    p += sign * h * v
            values.append(naive_objective().item())
            with torch.no_grad():
                for p, v in zip(params, direction):
                    p -= sign * h * v
        fd = (values[0] - values[1]) / (2 * h)
        assert abs(exact @ torch.cat([d.reshape(-1) for d in direction]) - fd) < 1e-9 + 1e-6 * abs(fd)


def test_meta_step_updates_the_generator_and_leaves_no_grad():
    net, gen, x, y = maxl_setup()
    task = GeneratedLabels(gen, head=net.aux_head)
    learner = AuxiliaryLearner.from_multitask_network(net, [task, Rotation(hidden=4)], Uncertainty()).double()
    before = [p.clone() for p in gen.parameters()]
    opt = torch.optim.SGD(gen.parameters(), lr=0.1)
    learner.meta_step(x, y, opt)
    assert all(p.grad is None for p in gen.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, gen.parameters()))
    ids = {id(p) for p in learner.network_parameters()}
    assert not ids & {id(p) for p in gen.parameters()} and id(learner.weighting.log_variance) in ids


def test_generated_labels_need_a_head_for_other_generators():
    with pytest.raises(ValueError, match="pass head="):
        GeneratedLabels(nn.Linear(2, 2)).attach(8)
