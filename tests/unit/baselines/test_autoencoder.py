"""Tests of maxl.baselines.autoencoder: shapes, learning on real digits, seeded and side-effect free."""

import pytest
import torch

from maxl.baselines.autoencoder import AutoencoderConfig, ConvAutoencoder, encode, train_autoencoder
from maxl.data.datasets import load_dataset

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.mark.parametrize("channels, size", [(1, (8, 8)), (1, (28, 28)), (3, (32, 32)), (2, (15, 13))])
def test_shapes(channels, size):
    model = ConvAutoencoder(channels, size, latent_dim=7, widths=(4, 8))
    x = torch.randn(3, channels, *size)
    assert model.encode(x).shape == (3, 7)
    assert model(x).shape == x.shape
    with pytest.raises(ValueError, match=r"expected images \[B, " + str(channels)):
        model.encode(torch.randn(3, channels + 1, *size))


def test_learns_digits_seeded_and_leaves_the_global_rng_alone():
    data = load_dataset("digits", train_subset=400)
    images = torch.stack([data.train[i][0] for i in range(len(data.train))])  # [400, 1, 8, 8]
    config = AutoencoderConfig(epochs=4, latent_dim=8, batch_size=32, seed=3)
    torch.manual_seed(0)
    expected_next = torch.rand(3)
    torch.manual_seed(0)
    model, losses = train_autoencoder(images, config)
    assert torch.equal(torch.rand(3), expected_next)  # the global RNG is where it was
    assert len(losses) == 4 and losses[-1] < 0.5 * losses[0]
    codes = encode(model, images, batch_size=64)
    assert codes.shape == (400, 8) and codes.dtype == torch.float32 and torch.isfinite(codes).all()
    again, _ = train_autoencoder(images, config)
    assert torch.equal(encode(again, images), codes)


def test_config_and_input_errors():
    with pytest.raises(ValueError, match="latent_dim must be >= 1, got 0"):
        AutoencoderConfig(latent_dim=0)
    with pytest.raises(ValueError, match="images must be float"):
        train_autoencoder(torch.zeros(2, 1, 8, 8, dtype=torch.uint8))
