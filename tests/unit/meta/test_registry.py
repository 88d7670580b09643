"""The engine registry: every built-in engine under its name, one rule from a config to a name,
clear errors, and an engine registered by a user used by :func:`maxl.meta.meta_gradient`."""

import pytest
import torch

from maxl.core.losses import classification_loss, negative_entropy
from maxl.meta import (
    ENGINES,
    FUSED_ENGINES,
    MetaConfig,
    MetaEngine,
    fused_step,
    get_engine,
    meta_gradient,
    register_engine,
    supports_fused,
)
from maxl.meta.engine import Lookahead
from maxl.meta.registry import ENGINES_REGISTRY

from tests.unit.meta.tiny import flat, tiny_networks


def test_every_built_in_engine_is_registered_under_its_name():
    assert ENGINES == ("func", "higher", "jvp")
    assert FUSED_ENGINES == ("func", "jvp")
    for name in ("func", "higher", "jvp", "first"):
        engine = get_engine(name)
        assert isinstance(engine, MetaEngine) and engine.name == name
        assert ENGINES_REGISTRY[name] is engine
    assert [n for n in ("func", "higher", "jvp", "first") if get_engine(n).needs_double_backward] == ["func", "higher"]


@pytest.mark.parametrize(
    ("cfg", "name"),
    [
        (MetaConfig(), "func"),
        (MetaConfig(engine="jvp"), "jvp"),
        (MetaConfig(engine="higher"), "higher"),
        (MetaConfig(order="first", engine="higher"), "first"),
    ],
)
def test_a_config_resolves_to_one_engine(cfg, name):
    assert cfg.engine_name == name
    assert get_engine(cfg) is get_engine(name)


def test_supports_fused():
    assert supports_fused(MetaConfig(engine="func")) and supports_fused(MetaConfig(engine="jvp"))
    assert supports_fused(MetaConfig(order="first", engine="higher"))
    assert not supports_fused(MetaConfig(engine="higher"))
    assert supports_fused("first") and not supports_fused("higher")


def test_an_unknown_engine_name_lists_the_registered_ones():
    with pytest.raises(ValueError, match=r"'jax'.*'func'.*'higher'.*'jvp'.*'first'"):
        get_engine("jax")


def test_a_name_cannot_be_registered_twice():
    class Again(MetaEngine):
        name = "func"

    with pytest.raises(ValueError, match="func"):
        register_engine(Again())
    assert type(get_engine("func")).__name__ != "Again"


class EntropyOnly(MetaEngine):
    """A toy engine whose look-ahead contributes nothing: ∇θ2 J = λ ∇θ2 H."""

    name = "entropy-only"

    def __init__(self):
        self.calls = 0

    def gradient(self, net, generator, x, y, loss_fn, config, extra_inner_loss=None, outer_batch=None):
        self.calls += 1
        soft = generator(x, y)  # [B, K]
        outer = loss_fn(net(x)[0], y).detach()
        return Lookahead(soft=soft, target=soft, outer=outer, objective=torch.zeros((), dtype=soft.dtype))


@pytest.fixture
def toy_engine():
    engine = register_engine(EntropyOnly())
    yield engine
    del ENGINES_REGISTRY[engine.name]


def test_a_user_registered_engine_is_used_by_meta_gradient(toy_engine):
    net, gen, x, y = tiny_networks()
    cfg = MetaConfig(engine="entropy-only")
    assert cfg.engine_name == "entropy-only" and get_engine(cfg) is toy_engine
    result = meta_gradient(net, gen, x, y, classification_loss("focal"), cfg)
    assert toy_engine.calls == 1
    expected = torch.autograd.grad(0.2 * negative_entropy(gen(x, y)), list(gen.parameters()))
    torch.testing.assert_close(flat(result.grads), flat(expected), rtol=1e-12, atol=1e-14)
    # no fused form: fused_step names the engine
    assert not supports_fused(cfg)
    with pytest.raises(ValueError, match="entropy-only"):
        fused_step(net, gen, x, y, classification_loss("focal"), cfg)


def test_an_unregistered_engine_is_refused_by_the_config():
    with pytest.raises(ValueError, match=r"'entropy-only'.*'func'"):
        MetaConfig(engine="entropy-only")
