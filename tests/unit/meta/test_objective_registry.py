"""The registry of J's label terms (issue 24): the paper's J is the look-ahead's loss plus the
registered batch-entropy term, and a registered term reaches every engine's meta-gradient."""

import pytest
import torch

from maxl.core.losses import classification_loss, negative_entropy
from maxl.meta import MetaConfig, meta_gradient
from maxl.meta.objective import label_terms, paper_objective, register_term, term_names, unregister_term
from maxl.nn import LabelGenerator, MultiTaskNetwork, tiny_cnn


def networks():
    torch.manual_seed(0)
    net = MultiTaskNetwork(tiny_cnn(1), 2, 5, hidden=4).double()
    gen = LabelGenerator(tiny_cnn(1), [2, 3], hidden=4).double()
    x, y = torch.randn(6, 1, 8, 8, dtype=torch.float64), torch.tensor([0, 1, 0, 1, 1, 0])
    return net, gen, x, y


def test_the_built_in_terms_make_the_papers_objective():
    assert term_names()[:2] == ("batch-entropy", "image-entropy")
    soft = torch.softmax(torch.randn(7, 5, dtype=torch.float64), 1)
    outer = torch.tensor(0.7, dtype=torch.float64)
    config = MetaConfig(entropy_weight=0.3)  # the paper's J: no per-image term
    assert torch.equal(label_terms(soft, config), 0.3 * negative_entropy(soft))
    assert torch.equal(outer + label_terms(soft, config), paper_objective(outer, soft, 0.3))
    by_hand = outer + 0.3 * (soft.mean(0) * soft.mean(0).log()).sum()
    torch.testing.assert_close(paper_objective(outer, soft, 0.3), by_hand, rtol=1e-12, atol=0)


@pytest.mark.parametrize("engine", ["func", "jvp", "first"])
def test_a_registered_term_adds_its_gradient_to_every_engines_meta_gradient(engine):
    net, gen, x, y = networks()
    loss = classification_loss("ce")
    config = MetaConfig(inner_lr=0.3, **({"order": "first"} if engine == "first" else {"engine": engine}))
    plain = meta_gradient(net, gen, x, y, loss, config)

    @register_term("test-first-class-mass")
    def first_class_mass(soft, cfg):  # 0.4 × the mean probability of auxiliary class 0
        return 0.4 * soft[:, 0].mean()

    try:
        assert term_names()[-1] == "test-first-class-mass"
        with_term = meta_gradient(net, gen, x, y, loss, config)
        with pytest.raises(ValueError, match="'test-first-class-mass' is registered already"):
            register_term("test-first-class-mass")(first_class_mass)
    finally:
        unregister_term("test-first-class-mass")
    direct = torch.autograd.grad(0.4 * gen(x, y)[:, 0].mean(), list(gen.parameters()))
    assert any(d.abs().max() > 1e-6 for d in direct)  # the term does something
    for a, b, d in zip(with_term.grads, plain.grads, direct):
        torch.testing.assert_close(a, b + d, rtol=1e-9, atol=1e-12)
    again = meta_gradient(net, gen, x, y, loss, config)  # unregistered: J as before
    assert all(torch.equal(a, b) for a, b in zip(again.grads, plain.grads))
    with pytest.raises(KeyError, match="no objective term 'test-first-class-mass'"):
        unregister_term("test-first-class-mass")
