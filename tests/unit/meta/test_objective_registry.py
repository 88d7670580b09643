"""The registry of J's label terms (issue 24): the paper's J is the look-ahead's loss plus the
registered batch-entropy term, and a registered term reaches every engine's meta-gradient."""

import pytest
import torch

from maxl.core.losses import classification_loss, negative_entropy
from maxl.meta import MetaConfig, ObjectiveConfig, meta_gradient
from maxl.meta.objective import (
    TermInputs,
    objective_terms,
    paper_objective,
    register_term,
    term_names,
    unregister_term,
)
from maxl.nn import LabelGenerator, MultiTaskNetwork, tiny_cnn


def networks():
    torch.manual_seed(0)
    net = MultiTaskNetwork(tiny_cnn(1), 2, 5, hidden=4).double()
    gen = LabelGenerator(tiny_cnn(1), [2, 3], hidden=4).double()
    x, y = torch.randn(6, 1, 8, 8, dtype=torch.float64), torch.tensor([0, 1, 0, 1, 1, 0])
    return net, gen, x, y


def test_the_built_in_terms_make_the_papers_objective():
    assert term_names()[:4] == ("batch-entropy", "image-entropy", "view-consistency", "centre-by-class")
    soft = torch.softmax(torch.randn(7, 5, dtype=torch.float64), 1)
    outer = torch.tensor(0.7, dtype=torch.float64)
    config = ObjectiveConfig(entropy_weight=0.3)  # the paper's J: no other term is on
    terms = objective_terms(TermInputs(soft), config)
    assert list(terms) == ["labels"] and torch.equal(terms["labels"], 0.3 * negative_entropy(soft))
    assert torch.equal(outer + terms["labels"], paper_objective(outer, soft, 0.3))
    by_hand = outer + 0.3 * (soft.mean(0) * soft.mean(0).log()).sum()
    torch.testing.assert_close(paper_objective(outer, soft, 0.3), by_hand, rtol=1e-12, atol=0)


@pytest.mark.parametrize("engine", ["func", "jvp", "first"])
def test_a_registered_term_adds_its_gradient_to_every_engines_meta_gradient(engine):
    net, gen, x, y = networks()
    loss = classification_loss("ce")
    config = MetaConfig(inner_lr=0.3, **({"order": "first"} if engine == "first" else {"engine": engine}))
    plain = meta_gradient(net, gen, x, y, loss, config)

    @register_term("test-first-class-mass")
    def first_class_mass(inputs, cfg):  # 0.4 × the mean probability of auxiliary class 0
        return 0.4 * inputs.soft[:, 0].mean()

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


def test_the_centre_by_class_term_subtracts_the_class_mean_push_through_the_labels():
    """The registered ``"centre-by-class"`` term, R = −Σ_b ⟨sg(c_b), ŷ_b⟩: its ∇θ2 is
    −Σ_b (∂ŷ_b/∂θ2)ᵀ c_b with c_b the mean of the push p = ∂L/∂ŷ over b's class, checked against
    float64 central differences of the scalar Σ_b ⟨c_b, g(x, y; θ2)_b⟩ with c held fixed."""
    from maxl.meta.engine import Lookahead
    from maxl.meta.objective import class_means

    from tests.unit.meta.tiny import finite_difference_gradient

    _, gen, x, y = networks()
    soft = gen(x, y)
    target = torch.randn_like(soft)
    look_objective = ((soft - target) ** 2 * torch.arange(1, 6, dtype=torch.float64)).sum()  # a stand-in L(ŷ)
    look = Lookahead(soft=soft, target=soft, outer=look_objective, objective=look_objective)
    inputs = TermInputs(soft, primary=y, look=look)
    terms = objective_terms(inputs, ObjectiveConfig(entropy_weight=0.0, centre_by_class=True))
    assert set(terms) == {"labels", "lookahead"}  # λ = 0 still gives the (zero) labels part
    params = list(gen.parameters())
    got = torch.autograd.grad(terms["lookahead"], params)
    push = (2 * (soft - target) * torch.arange(1, 6, dtype=torch.float64)).detach()
    c = class_means(push, y)
    for k in y.unique():
        torch.testing.assert_close(c[y == k], push[y == k].mean(0).expand_as(c[y == k]))
    with torch.no_grad():
        fd = finite_difference_gradient(lambda: -(c * gen(x, y)).sum(), params)
    assert any(f.abs().max() > 1e-6 for f in fd)
    for g, f in zip(got, fd):
        torch.testing.assert_close(g, f, rtol=1e-6, atol=1e-8)
    with pytest.raises(ValueError, match="needs the inner batch's primary labels"):
        objective_terms(TermInputs(soft, look=look), ObjectiveConfig(centre_by_class=True))


def test_a_moved_setting_is_refused_by_meta_config_with_where_it_went():
    with pytest.raises(TypeError, match=r"entropy_weight moved to maxl.ObjectiveConfig\(entropy_weight=...\)"):
        MetaConfig(entropy_weight=0.3)
    with pytest.raises(TypeError, match="'centre_by_class', 'record_parts'"):
        MetaConfig(inner_lr=0.1, centre_by_class=True, record_parts=True)
    with pytest.raises(ValueError, match="unknown part 'elsewhere'"):
        register_term("test-elsewhere", part="elsewhere")
