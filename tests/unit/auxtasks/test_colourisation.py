"""Colourisation: Lab targets from kornia, inputs made of L alone, soft encoding, rebalancing."""

import math

import pytest
import torch
from kornia.color import lab_to_rgb, rgb_to_lab

from auxtasks import AB_SCALE, Colourisation, ab_bins

MEAN, STD = 0.5, 0.2  # the CIFAR normalisation of maxl's data sets


def normalise(rgb):
    return (rgb - MEAN) / STD


def test_target_round_trips_rgb_lab_rgb():
    torch.manual_seed(0)
    rgb = torch.rand(4, 3, 8, 8)
    task = Colourisation(target_size=8, mean=MEAN, std=STD)
    inputs, ab = task.make_inputs_and_targets(normalise(rgb), None)
    assert inputs.shape == (4, 3, 8, 8) and ab.shape == (4, 2, 8, 8)
    lightness = (inputs[:, :1] * STD + MEAN) * 100  # the input holds L / 100, normalised like the images
    back = lab_to_rgb(torch.cat([lightness, ab], dim=1))
    assert (back - rgb).abs().max() < 1e-3


def test_input_is_made_of_lightness_alone():
    torch.manual_seed(1)
    lightness = 30 + 40 * torch.rand(2, 1, 6, 6)
    colour_a, colour_b = 20 * torch.rand(2, 2, 6, 6) - 10, 20 * torch.rand(2, 2, 6, 6) - 10
    rgb_a = lab_to_rgb(torch.cat([lightness, colour_a], 1))  # same L, different colours (inside the gamut)
    rgb_b = lab_to_rgb(torch.cat([lightness, colour_b], 1))
    assert (rgb_a - rgb_b).abs().max() > 0.05
    task = Colourisation(target_size=6, mean=MEAN, std=STD)
    in_a, target_a = task.make_inputs_and_targets(normalise(rgb_a), None)
    in_b, target_b = task.make_inputs_and_targets(normalise(rgb_b), None)
    assert torch.equal(in_a[:, 0], in_a[:, 1]) and torch.equal(in_a[:, 0], in_a[:, 2])  # grey: no colour
    torch.testing.assert_close(in_a, in_b, atol=1e-4, rtol=0)  # colour does not reach the input
    torch.testing.assert_close(in_a[:, :1], normalise(lightness / 100), atol=1e-4, rtol=0)
    torch.testing.assert_close(target_a, colour_a, atol=1e-3, rtol=0)
    assert (target_a - target_b).abs().max() > 1


def test_reduced_target_is_the_block_average_of_ab():
    rgb = torch.rand(2, 3, 8, 8)
    _, ab = Colourisation(target_size=2).make_inputs_and_targets(rgb, None)
    full = rgb_to_lab(rgb)[:, 1:]
    by_hand = torch.stack(
        [
            torch.stack([full[:, :, 4 * i : 4 * i + 4, 4 * j : 4 * j + 4].mean((-2, -1)) for j in range(2)], -1)
            for i in range(2)
        ],
        -2,
    )
    torch.testing.assert_close(ab, by_hand)


def test_grey_images_are_rejected_with_a_clear_error():
    with pytest.raises(ValueError, match=r"needs RGB images \[B, 3, H, W\].*1 channel"):
        Colourisation().make_inputs_and_targets(torch.zeros(2, 1, 8, 8), None)
    with pytest.raises(ValueError, match="unknown colourisation mode"):
        Colourisation(mode="paint")


def test_ab_bins_cover_the_srgb_gamut():
    bins = ab_bins()
    assert bins.shape[1] == 2 and 200 < len(bins) < 320
    assert torch.equal(bins, (bins / 10).round() * 10) and (bins == 0).all(1).any()
    ab = rgb_to_lab(torch.rand(3, 4000, 1))[1:].reshape(2, -1).T  # random sRGB colours
    assert torch.cdist(ab, bins).min(1).values.max() <= 5 * math.sqrt(2) + 1e-4  # every colour lies in a bin


def test_soft_encoding_is_five_nearest_bins_with_gaussian_weights():
    task = Colourisation(mode="classification", target_size=1)
    ab = torch.tensor([[3.0, -12.0], [43.0, 26.0]]).view(2, 2, 1, 1)  # no ties among the nearest bins
    z = task.soft_encode(ab)  # [2, Q, 1, 1]
    assert z.shape == (2, task.num_bins, 1, 1)
    for b in range(2):
        row, point = z[b, :, 0, 0], ab[b, :, 0, 0]
        dist = (task.bins - point).norm(dim=1)
        nearest = dist.argsort()[:5]
        assert set(row.nonzero().squeeze(1).tolist()) == set(nearest.tolist())
        weights = torch.exp(-(dist[nearest] ** 2) / (2 * 5.0**2))
        torch.testing.assert_close(row[nearest], weights / weights.sum())


def test_rebalancing_weights_follow_the_papers_formula_by_a_naive_loop():
    # 90 % of the pixels one colour, 10 % another
    common, rare = torch.tensor([0.2, 0.5, 0.2]), torch.tensor([0.9, 0.1, 0.1])
    rgb = common.view(1, 3, 1, 1).repeat(10, 1, 4, 4)
    rgb[9] = rare.view(3, 1, 1)
    task = Colourisation(mode="classification", target_size=4, mean=MEAN, std=STD)
    with pytest.raises(RuntimeError, match="estimate_prior"):
        task.loss(torch.zeros(10, task.num_bins, 4, 4), torch.zeros(10, 2, 4, 4))
    weights = task.estimate_prior(normalise(rgb))

    bins, q, lam, sigma = task.bins.double(), task.num_bins, 0.5, 5.0
    counts = [0.0] * q
    for colour, n in ((common, 9 * 16), (rare, 16)):
        ab = rgb_to_lab(colour.view(3, 1, 1))[1:, 0, 0].double()
        counts[int((bins - ab).norm(dim=1).argmin())] += n
    p = [c / sum(counts) for c in counts]
    kernel = [[math.exp(-float((bins[i] - bins[j]).pow(2).sum()) / (2 * sigma**2)) for j in range(q)] for i in range(q)]
    column = [sum(kernel[k][j] for k in range(q)) for j in range(q)]  # each source bin spreads mass 1
    smoothed = [sum(p[j] * kernel[i][j] / column[j] for j in range(q) if p[j]) for i in range(q)]
    raw = [1 / ((1 - lam) * s + lam / q) for s in smoothed]
    scale = sum(s * w for s, w in zip(smoothed, raw))
    expected = torch.tensor([w / scale for w in raw], dtype=torch.float64)
    torch.testing.assert_close(weights.double(), expected, rtol=1e-4, atol=1e-6)
    assert (
        weights[
            task.soft_encode(
                task.make_inputs_and_targets(normalise(rare.view(1, 3, 1, 1).expand(1, 3, 4, 4)), None)[1]
            ).argmax(1)[0, 0, 0]
        ]
        > 1.0
    )


def test_regression_loss_is_mse_on_scaled_ab_and_the_decoder_fits_the_target_size():
    task = Colourisation(target_size=8)
    task.attach(16)
    pred = task(torch.randn(3, 16))
    assert pred.shape == (3, 2, 8, 8)
    ab = 50 * torch.randn(3, 2, 8, 8)
    torch.testing.assert_close(task.loss(pred, ab), ((pred - ab / AB_SCALE) ** 2).mean())
    odd = Colourisation(mode="classification", target_size=6, rebalance=None)
    odd.attach(16)
    assert odd(torch.randn(2, 16)).shape == (2, odd.num_bins, 6, 6)


def test_classification_head_learns_the_colour_bins_of_fixed_features():
    torch.manual_seed(0)
    rgb = torch.rand(4, 3, 2, 2).repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)  # 2x2 blocks of colour
    task = Colourisation(mode="classification", target_size=2, mean=MEAN, std=STD)
    task.estimate_prior(normalise(rgb))
    task.attach(8)
    features = torch.randn(4, 8)
    _, ab = task.make_inputs_and_targets(normalise(rgb), None)
    nearest = task.soft_encode(ab).argmax(1)  # [4, 2, 2]
    opt = torch.optim.Adam(task.head.parameters(), lr=1e-2)
    first = task.loss(task(features), ab).item()
    for _ in range(150):
        opt.zero_grad()
        loss = task.loss(task(features), ab)
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first
    assert (task(features).argmax(1) == nearest).float().mean() > 0.9
