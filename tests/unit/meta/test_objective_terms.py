"""The per-image entropy term of J (the mutual-information objective), every engine."""

import pytest
import torch

from maxl.core.losses import classification_loss, mean_entropy
from maxl.meta import MetaConfig, meta_gradient
from maxl.nn import LabelGenerator, MultiTaskNetwork, tiny_cnn


@pytest.mark.parametrize("engine", ["func", "higher", "jvp", "first"])
def test_the_image_entropy_term_adds_mu_times_its_gradient(engine):
    torch.manual_seed(0)
    net = MultiTaskNetwork(tiny_cnn(1), 2, 5, hidden=4).double()
    gen = LabelGenerator(tiny_cnn(1), [2, 3], hidden=4).double()
    x, y = torch.randn(6, 1, 8, 8, dtype=torch.float64), torch.tensor([0, 1, 0, 1, 1, 0])
    loss = classification_loss("ce")
    settings = dict(inner_lr=0.3, entropy_weight=0.2, **({"order": "first"} if engine == "first" else
                                                         {"engine": engine}))
    plain = meta_gradient(net, gen, x, y, loss, MetaConfig(**settings))
    mi = meta_gradient(net, gen, x, y, loss, MetaConfig(**settings, image_entropy_weight=0.7))
    direct = torch.autograd.grad(mean_entropy(gen(x, y)), list(gen.parameters()))
    for a, b, d in zip(mi.grads, plain.grads, direct):
        torch.testing.assert_close(a, b + 0.7 * d, rtol=1e-9, atol=1e-12)
    assert any(d.abs().max() > 1e-6 for d in direct)  # the term does something
    with pytest.raises(ValueError, match="image_entropy_weight and consistency_weight must be >= 0, got -1.0"):
        MetaConfig(image_entropy_weight=-1.0)


def test_an_extra_outer_loss_adds_its_gradient_and_the_learner_makes_the_consistency_term():
    from auxtasks import AuxiliaryLearner, GeneratedLabels
    from auxtasks.generated import random_flip_shift
    from maxl.core.losses import paired_mutual_information

    torch.manual_seed(0)
    net = MultiTaskNetwork(tiny_cnn(1), 2, 5, hidden=4).double()
    gen = LabelGenerator(tiny_cnn(1), [2, 3], hidden=4).double()
    x, y = torch.randn(6, 1, 8, 8, dtype=torch.float64), torch.tensor([0, 1, 0, 1, 1, 0])
    loss, cfg = classification_loss("ce"), MetaConfig(inner_lr=0.3, engine="jvp")
    plain = meta_gradient(net, gen, x, y, loss, cfg)
    extra = meta_gradient(net, gen, x, y, loss, cfg, extra_outer_loss=lambda soft: (soft ** 2).sum())
    direct = torch.autograd.grad((gen(x, y) ** 2).sum(), list(gen.parameters()))
    for a, b, d in zip(extra.grads, plain.grads, direct):
        torch.testing.assert_close(a, b + d, rtol=1e-9, atol=1e-12)

    task = GeneratedLabels(gen, meta=MetaConfig(inner_lr=0.3, engine="jvp", consistency_weight=0.5),
                           loss_fn=loss, head=net.aux_head)
    learner = AuxiliaryLearner(net.backbone, net.primary_head, [task], primary_loss=loss)
    torch.manual_seed(1)
    got = learner.meta_gradient(x, y)
    torch.manual_seed(1)
    views = random_flip_shift(x)  # the view the learner draws with the same random numbers
    consistency = -0.5 * paired_mutual_information(gen(x, y), gen(views, y))
    direct = torch.autograd.grad(consistency, list(gen.parameters()))
    for a, b, d in zip(got.grads, plain.grads, direct):
        torch.testing.assert_close(a, b + d, rtol=1e-9, atol=1e-12)


def test_random_flip_shift_gives_flipped_or_shifted_crops_of_each_image():
    from auxtasks.generated import random_flip_shift

    torch.manual_seed(0)
    x = torch.arange(2 * 1 * 8 * 8, dtype=torch.float64).view(2, 1, 8, 8)
    views = random_flip_shift(x, shift=2)
    assert views.shape == x.shape
    for image, view in zip(x, views):
        candidates = []
        for flipped in (image, image.flip(2)):
            padded = torch.nn.functional.pad(flipped[None], (2,) * 4, mode="reflect")[0]
            candidates += [padded[:, i:i + 8, j:j + 8] for i in range(5) for j in range(5)]
        assert any(torch.equal(view, c) for c in candidates)
