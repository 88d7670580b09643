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
    with pytest.raises(ValueError, match="image_entropy_weight must be >= 0"):
        MetaConfig(image_entropy_weight=-1.0)
