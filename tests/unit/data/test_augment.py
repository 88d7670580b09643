"""Batch-level crop, flip and normalisation (maxl.data.augment) against torchvision's per-image
transforms: bit-equal for the same offsets and flips, the same distribution of the draws (a
chi-square goodness-of-fit test), and draws that depend on (seed, pass, image) alone."""

import pytest
import torch
from scipy import stats
from torchvision.transforms import v2

from maxl.data.augment import BatchAugment, Draws, pass_draws
from maxl.data.datasets import make_transform

MEAN, STD = [0.5, 0.45, 0.4], [0.2, 0.25, 0.3]


def reference(image: torch.Tensor, top: int, left: int, flip: bool, padding: int, mode: str) -> torch.Tensor:
    """torchvision v2's per-image path with the crop and flip given: pad, crop, flip, scale, normalise."""
    h, w = image.shape[1:]
    x = v2.functional.pad(image, [padding], padding_mode=mode)
    x = v2.functional.crop(x, top, left, h, w)
    if flip:
        x = v2.functional.horizontal_flip(x)
    return v2.functional.normalize(v2.functional.to_dtype(x, torch.float32, scale=True), MEAN, STD)


@pytest.mark.parametrize("mode", ["constant", "reflect"])
@pytest.mark.parametrize(("padding", "size"), [(4, (32, 32)), (2, (9, 13)), (1, (3, 5))])
def test_batch_equals_torchvision_per_image(mode, padding, size):
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (24, 3, *size), dtype=torch.uint8, generator=gen)
    augment = BatchAugment(MEAN, STD, padding=padding, padding_mode=mode)
    draws = augment.draw(len(images), gen)
    span = 2 * padding + 1
    # every corner offset and both flips occur at least once, besides the random ones
    draws = Draws(
        torch.cat([draws.top, torch.tensor([0, 0, span - 1, span - 1])]),
        torch.cat([draws.left, torch.tensor([0, span - 1, 0, span - 1])]),
        torch.cat([draws.flip, torch.tensor([True, False, False, True])]),
    )
    images = torch.cat([images, images[:4]])
    out = augment(images, draws)
    expected = torch.stack(
        [
            reference(x, int(t), int(le), bool(f), padding, mode)
            for x, t, le, f in zip(images, draws.top, draws.left, draws.flip)
        ]
    )
    assert out.dtype == torch.float32 and out.shape == images.shape
    assert torch.equal(out, expected)


def test_no_augment_is_the_per_image_normalisation():
    images = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
    plain = make_transform(8, MEAN, STD, augment=False)
    out = BatchAugment(MEAN, STD, augment=False)(images)
    assert torch.equal(out, torch.stack([plain(x) for x in images]))


def test_padding_zero_flips_only():
    images = torch.randint(0, 256, (6, 3, 4, 4), dtype=torch.uint8)
    augment = BatchAugment(MEAN, STD, padding=0)
    draws = Draws(torch.zeros(6, dtype=torch.int64), torch.zeros(6, dtype=torch.int64), torch.arange(6) % 2 == 0)
    expected = torch.stack([reference(x, 0, 0, bool(f), 0, "constant") for x, f in zip(images, draws.flip)])
    assert torch.equal(augment(images, draws), expected)


def test_offsets_and_flips_uniform_and_independent():
    """The joint law of (top, left, flip) is uniform on its 9 x 9 x 2 cells (chi-square goodness
    of fit, 81,000 draws from a fixed seed; the test's p-value is far above any threshold that a
    biased draw, e.g. an off-by-one range, would reach: that gives p ~ 0)."""
    augment = BatchAugment(MEAN, STD, padding=4)
    draws = augment.draw(81_000, torch.Generator().manual_seed(1))
    assert int(draws.top.min()) == 0 and int(draws.top.max()) == 8
    assert int(draws.left.min()) == 0 and int(draws.left.max()) == 8
    cells = (draws.top * 9 + draws.left) * 2 + draws.flip.long()
    counts = torch.bincount(cells, minlength=162).numpy()
    assert stats.chisquare(counts).pvalue > 1e-3
    for margin, bins in ((draws.top, 9), (draws.left, 9), (draws.flip.long(), 2)):
        assert stats.chisquare(torch.bincount(margin, minlength=bins).numpy()).pvalue > 1e-3
    # the test sees a bias: a range one too short puts nothing in the last row
    biased = torch.bincount(((draws.top % 8) * 9 + draws.left) * 2 + draws.flip.long(), minlength=162)
    assert stats.chisquare(biased.numpy()).pvalue < 1e-12


def test_pass_draws_depend_on_seed_and_pass_only():
    augment = BatchAugment(MEAN, STD)
    a = pass_draws(augment, 1000, seed=3, pass_index=5)
    b = pass_draws(augment, 1000, seed=3, pass_index=5)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    for other in (pass_draws(augment, 1000, 3, 6), pass_draws(augment, 1000, 4, 5)):
        assert not torch.equal(a.top, other.top)
    # one image's draws are the same whichever batch (and process) it is in
    index = torch.tensor([7, 999, 0])
    taken = a.take(index)
    assert torch.equal(taken.top, a.top[index]) and torch.equal(taken.flip, a.flip[index])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mean": [0.5], "std": [0.2, 0.2]}, "one value per channel"),
        ({"mean": [0.5], "std": [0.0]}, "std must be > 0"),
        ({"mean": [0.5], "std": [0.2], "padding": -1}, "padding must be >= 0"),
        ({"mean": [0.5], "std": [0.2], "padding_mode": "edge"}, "padding_mode must be one of"),
    ],
)
def test_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BatchAugment(**kwargs)


def test_bad_images_and_missing_draws():
    augment = BatchAugment(MEAN, STD)
    with pytest.raises(ValueError, match="uint8"):
        augment(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"uint8 \[B, 3, H, W\]"):
        augment(torch.zeros(2, 1, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="needs the draws"):
        augment(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
