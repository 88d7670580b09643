"""MetaConfig: its validation and the one rule from (order, engine) to a registered engine."""

import pytest

from maxl.meta import MetaConfig


def test_meta_config_rejects_unknown_settings():
    with pytest.raises(ValueError, match="engine"):
        MetaConfig(engine="jax")
    with pytest.raises(ValueError, match="order"):
        MetaConfig(order="third")
    with pytest.raises(ValueError, match="inner_lr"):
        MetaConfig(inner_lr=0)
    for steps in (0, 1.5, True):
        with pytest.raises(ValueError, match="inner_steps"):
            MetaConfig(inner_steps=steps)


def test_the_first_order_variant_resolves_to_the_first_engine_whatever_the_engine_field():
    assert [MetaConfig(engine=e).engine_name for e in ("func", "higher", "jvp")] == ["func", "higher", "jvp"]
    assert {MetaConfig(order="first", engine=e).engine_name for e in ("func", "higher", "jvp")} == {"first"}
