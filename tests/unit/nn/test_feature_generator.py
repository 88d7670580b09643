"""The label-generation network that reads the multi-task network's (detached) features."""

import torch

from maxl.core.losses import classification_loss
from maxl.meta import MetaConfig, meta_gradient
from maxl.nn import FeatureLabelGenerator, MultiTaskNetwork, tiny_cnn


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


def test_meta_gradient_through_it_matches_finite_differences():
    net, gen = networks()
    x, y = torch.randn(6, 1, 8, 8, dtype=torch.float64), torch.tensor([0, 1, 0, 1, 1, 0])
    loss, cfg = classification_loss("ce"), MetaConfig(inner_lr=0.5, entropy_weight=0.3)
    grads = meta_gradient(net, gen, x, y, loss, cfg).grads
    params = [p for p in gen.parameters()]

    def objective():  # J(θ2) = L_pri(θ1 − α∇θ1(L_pri + L_aux(g(θ2)))) + λH, recomputed from scratch
        soft = gen(x, y)
        names, theta = zip(*net.named_parameters())
        buffers = {n: b.clone() for n, b in net.named_buffers()}
        call = lambda ps: torch.func.functional_call(net, ({**dict(zip(names, ps)), **buffers}), (x,))  # noqa: E731
        theta = [t.detach().requires_grad_() for t in theta]
        p_logits, a_logits = call(theta)
        g = torch.autograd.grad(loss(p_logits, y) + loss(a_logits, soft), theta)
        fast = [t - 0.5 * gi for t, gi in zip(theta, g)]
        mean = soft.mean(0)
        return loss(call(fast)[0], y) + 0.3 * (mean[mean > 0] * mean[mean > 0].log()).sum()

    eps = 1e-6
    for p, g in zip(params, grads):
        flat = p.data.view(-1)
        for i in range(0, flat.numel(), max(1, flat.numel() // 5)):
            old = flat[i].item()
            flat[i] = old + eps
            plus = objective().item()
            flat[i] = old - eps
            minus = objective().item()
            flat[i] = old
            assert abs((plus - minus) / (2 * eps) - g.view(-1)[i].item()) < 1e-6 * max(1.0, abs(g.view(-1)[i].item()))
