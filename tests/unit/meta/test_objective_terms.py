"""The registered terms of J beside the paper's: per-image entropy (the mutual-information
objective), view consistency (its second view), every engine."""

import pytest
import torch

from maxl.core.losses import classification_loss, mean_entropy
from maxl.meta import MetaConfig, ObjectiveConfig, meta_gradient
from maxl.nn import LabelGenerator, MultiTaskNetwork, tiny_cnn


@pytest.mark.parametrize("engine", ["func", "higher", "jvp", "first"])
def test_the_image_entropy_term_adds_mu_times_its_gradient(engine):
    torch.manual_seed(0)
    net = MultiTaskNetwork(tiny_cnn(1), 2, 5, hidden=4).double()
    gen = LabelGenerator(tiny_cnn(1), [2, 3], hidden=4).double()
    x, y = torch.randn(6, 1, 8, 8, dtype=torch.float64), torch.tensor([0, 1, 0, 1, 1, 0])
    loss = classification_loss("ce")
    cfg = MetaConfig(inner_lr=0.3, **({"order": "first"} if engine == "first" else {"engine": engine}))
    plain = meta_gradient(net, gen, x, y, loss, cfg, objective=ObjectiveConfig(entropy_weight=0.2))
    mi = meta_gradient(
        net, gen, x, y, loss, cfg, objective=ObjectiveConfig(entropy_weight=0.2, image_entropy_weight=0.7)
    )
    direct = torch.autograd.grad(mean_entropy(gen(x, y)), list(gen.parameters()))
    for a, b, d in zip(mi.grads, plain.grads, direct):
        torch.testing.assert_close(a, b + 0.7 * d, rtol=1e-9, atol=1e-12)
    assert any(d.abs().max() > 1e-6 for d in direct)  # the term does something
    with pytest.raises(ValueError, match="image_entropy_weight must be >= 0, got -1.0"):
        ObjectiveConfig(image_entropy_weight=-1.0)


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
    extra = meta_gradient(net, gen, x, y, loss, cfg, extra_outer_loss=lambda soft: (soft**2).sum())
    direct = torch.autograd.grad((gen(x, y) ** 2).sum(), list(gen.parameters()))
    for a, b, d in zip(extra.grads, plain.grads, direct):
        torch.testing.assert_close(a, b + d, rtol=1e-9, atol=1e-12)

    task = GeneratedLabels(
        gen, meta=cfg, objective=ObjectiveConfig(consistency_weight=0.5), loss_fn=loss, head=net.aux_head
    )
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
            candidates += [padded[:, i : i + 8, j : j + 8] for i in range(5) for j in range(5)]
        assert any(torch.equal(view, c) for c in candidates)


@pytest.mark.parametrize("channels", [3, 1])
def test_random_colour_equals_torchvision_colour_ops_image_by_image(channels):
    """Each view is torchvision's brightness, contrast, saturation adjustment (and grayscale) of its
    image with that image's factors, on the un-normalised pixels."""
    from torchvision.transforms.v2 import functional as F

    from auxtasks.generated import random_colour

    mean, std = [0.5, 0.4, 0.3][:channels], [0.25, 0.2, 0.3][:channels]
    torch.manual_seed(0)
    pixels = torch.rand(16, channels, 6, 6, dtype=torch.float64)
    images = (pixels - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    torch.manual_seed(5)
    views = random_colour(images, 0.6, mean, std, grayscale_p=0.5)
    torch.manual_seed(5)  # the same draws: three factors per image, then the grayscale coin
    factors = 1 + 0.6 * (2 * torch.rand(3, 16, 1, 1, 1, dtype=torch.float64) - 1)
    coins = torch.rand(16, 1, 1, 1) < 0.5
    grey_count = 0
    for i in range(16):
        expected = F.adjust_brightness(pixels[i], factors[0, i].item())
        expected = F.adjust_contrast(expected, factors[1, i].item())
        if channels == 3:
            expected = F.adjust_saturation(expected, factors[2, i].item())
            if coins[i]:
                expected = F.rgb_to_grayscale(expected, num_output_channels=3)
                grey_count += 1
        got = views[i] * torch.tensor(std).view(-1, 1, 1) + torch.tensor(mean).view(-1, 1, 1)
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    assert channels == 1 or 0 < grey_count < 16  # both branches were taken
    assert not torch.allclose(views, images)


def test_random_colour_settings():
    from auxtasks import GeneratedLabels
    from auxtasks.generated import random_colour

    x = torch.randn(2, 3, 4, 4)
    assert random_colour(x, 0.0, [0.5], [0.25]) is x
    with pytest.raises(ValueError, match=r"colour strength must be in \[0, 1\)"):
        random_colour(x, 1.0, [0.5], [0.25])
    with pytest.raises(ValueError, match="1 or 3 channels, got 2"):
        random_colour(x[:, :2], 0.5, [0.5], [0.25])
    with pytest.raises(ValueError, match="consistency_colour must be in"):
        ObjectiveConfig(consistency_colour=-0.1)
    gen = LabelGenerator(tiny_cnn(3), [2, 3], hidden=4)
    with pytest.raises(ValueError, match="needs the images' normalisation"):
        GeneratedLabels(gen, objective=ObjectiveConfig(consistency_weight=1.0, consistency_colour=0.4))


def test_random_flip_shift_without_flip_gives_only_shifted_crops():
    from auxtasks.generated import random_flip_shift

    torch.manual_seed(0)
    x = torch.arange(16 * 1 * 8 * 8, dtype=torch.float64).view(16, 1, 8, 8)
    views = random_flip_shift(x, shift=2, flip=False)
    for image, view in zip(x, views):
        padded = torch.nn.functional.pad(image[None], (2,) * 4, mode="reflect")[0]
        assert any(torch.equal(view, padded[:, i : i + 8, j : j + 8]) for i in range(5) for j in range(5))
    torch.manual_seed(0)  # with flips, some of these 16 views are mirror images that no shift gives
    flipped = random_flip_shift(x, shift=2)
    unflipped = [
        any(
            torch.equal(v, torch.nn.functional.pad(im[None], (2,) * 4, mode="reflect")[0][:, i : i + 8, j : j + 8])
            for i in range(5)
            for j in range(5)
        )
        for im, v in zip(x, flipped)
    ]
    assert not all(unflipped)


@pytest.mark.parametrize("channels", [1, 3])
def test_random_rotation_equals_torchvision_rotate_with_black_corners(channels):
    from torchvision.transforms.v2 import functional as F

    from auxtasks.generated import random_rotation

    mean, std = [0.5, 0.4, 0.3][:channels], [0.25, 0.2, 0.3][:channels]
    m, s = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
    torch.manual_seed(0)
    pixels = torch.rand(8, channels, 9, 9, dtype=torch.float64)
    images = (pixels - m) / s
    torch.manual_seed(3)
    views = random_rotation(images, 30.0, mean, std)
    torch.manual_seed(3)
    angles = 30.0 * (2 * torch.rand(8, dtype=torch.float64) - 1)
    assert angles.abs().max() > 5  # the views are rotated, not nearly identical
    for i in range(8):  # torchvision on the pixels, black corners, then normalised
        expected = (F.rotate(pixels[i], angles[i].item(), F.InterpolationMode.BILINEAR) - m[0]) / s[0]
        torch.testing.assert_close(views[i], expected, rtol=1e-6, atol=1e-6)
    black = (torch.zeros(2, channels, 9, 9, dtype=torch.float64) - m) / s
    torch.testing.assert_close(random_rotation(black, 45.0, mean, std), black)  # the corners are black, too
    assert random_rotation(images, 0.0, mean, std) is images
    with pytest.raises(ValueError, match=r"rotation must be in \[0, 180\] degrees, got 200"):
        random_rotation(images, 200, mean, std)
    with pytest.raises(ValueError, match=r"consistency_rotation must be in \[0, 180\] degrees, got -1"):
        ObjectiveConfig(consistency_rotation=-1)


def _colour_view(x, norm):
    from auxtasks.generated import random_colour, random_flip_shift

    return random_colour(random_flip_shift(x), 0.4, *norm)


def _rotated_unflipped_view(x, norm):
    from auxtasks.generated import random_flip_shift, random_rotation

    return random_rotation(random_flip_shift(x, flip=False), 20.0, *norm)


@pytest.mark.parametrize(
    "channels, settings, make_view",
    [
        (3, dict(consistency_colour=0.4), _colour_view),
        (1, dict(consistency_flip=False, consistency_rotation=20.0), _rotated_unflipped_view),
    ],
    ids=["colour", "rotation-no-flip"],
)
def test_the_learner_makes_the_configured_second_view_of_the_consistency_term(channels, settings, make_view):
    """The learner's consistency term equals −ν I(g(x), g(x')) with x' drawn as configured
    (the same random numbers), and a view setting without the normalisation is refused."""
    from auxtasks import AuxiliaryLearner, GeneratedLabels
    from maxl.core.losses import paired_mutual_information

    torch.manual_seed(0)
    net = MultiTaskNetwork(tiny_cnn(channels), 2, 5, hidden=4).double()
    gen = LabelGenerator(tiny_cnn(channels), [2, 3], hidden=4).double()
    x, y = torch.randn(6, channels, 8, 8, dtype=torch.float64), torch.tensor([0, 1, 0, 1, 1, 0])
    loss = classification_loss("ce")
    norm = ([0.5] * channels, [0.25] * channels)
    plain = meta_gradient(net, gen, x, y, loss, MetaConfig(inner_lr=0.3, engine="jvp"))
    cfg, objective = MetaConfig(inner_lr=0.3, engine="jvp"), ObjectiveConfig(consistency_weight=0.5, **settings)
    with pytest.raises(ValueError, match="needs the images' normalisation"):
        GeneratedLabels(gen, meta=cfg, objective=objective, loss_fn=loss, head=net.aux_head)
    task = GeneratedLabels(gen, meta=cfg, objective=objective, loss_fn=loss, head=net.aux_head, normalisation=norm)
    learner = AuxiliaryLearner(net.backbone, net.primary_head, [task], primary_loss=loss)
    torch.manual_seed(1)
    got = learner.meta_gradient(x, y)
    torch.manual_seed(1)
    consistency = -0.5 * paired_mutual_information(gen(x, y), gen(make_view(x, norm), y))
    direct = torch.autograd.grad(consistency, list(gen.parameters()))
    for a, b, d in zip(got.grads, plain.grads, direct):
        torch.testing.assert_close(a, b + d, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("engine", ["func", "jvp", "first"])
def test_the_view_consistency_term_equals_its_direct_computation_and_needs_a_second_view(engine):
    """The registered ``"view-consistency"`` term adds ∇θ2 of −ν I(g(x), g(x′)) to every engine's
    meta-gradient, checked in float64 against float64 central differences of the term; without a
    second view it is refused, at ν = 0 it is off."""
    from maxl.core.losses import paired_mutual_information

    from tests.unit.meta.tiny import finite_difference_gradient

    torch.manual_seed(0)
    net = MultiTaskNetwork(tiny_cnn(1), 2, 5, hidden=4).double()
    gen = LabelGenerator(tiny_cnn(1), [2, 3], hidden=4).double()
    x, y = torch.randn(6, 1, 8, 8, dtype=torch.float64), torch.tensor([0, 1, 0, 1, 1, 0])
    views = torch.randn(6, 1, 8, 8, dtype=torch.float64)
    loss = classification_loss("ce")
    cfg = MetaConfig(inner_lr=0.3, **({"order": "first"} if engine == "first" else {"engine": engine}))
    plain = meta_gradient(net, gen, x, y, loss, cfg)
    objective = ObjectiveConfig(consistency_weight=0.5)
    got = meta_gradient(net, gen, x, y, loss, cfg, objective=objective, second_view=lambda: gen(views, y))
    with torch.no_grad():
        fd = finite_difference_gradient(
            lambda: -0.5 * paired_mutual_information(gen(x, y), gen(views, y)), list(gen.parameters())
        )
    assert any(d.abs().max() > 1e-6 for d in fd)  # the term does something
    for a, b, d in zip(got.grads, plain.grads, fd):
        torch.testing.assert_close(a - b, d, rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="needs a second view of the images"):
        meta_gradient(net, gen, x, y, loss, cfg, objective=objective)
    off = meta_gradient(net, gen, x, y, loss, cfg, second_view=lambda: gen(views, y))  # ν = 0: no term
    assert all(torch.equal(a, b) for a, b in zip(off.grads, plain.grads))
