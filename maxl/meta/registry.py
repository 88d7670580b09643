"""The registry of meta-gradient engines: name → :class:`maxl.meta.engine.MetaEngine`.

The built-in engines (``"func"``, ``"higher"``, ``"jvp"``, ``"first"``) register themselves when
:mod:`maxl.meta.engines` is imported, which ``import maxl.meta`` does. A new engine is a subclass
of :class:`~maxl.meta.engine.MetaEngine` registered once; ``MetaConfig(engine=its_name)`` then
selects it, and :func:`maxl.meta.meta_gradient` / :func:`maxl.meta.fused_step` use it without any
branch on its name (the pattern of the ``higher`` package's optimiser registry).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from maxl.meta.engine import MetaEngine

if TYPE_CHECKING:
    from maxl.meta.config import MetaConfig

__all__ = ["ENGINES_REGISTRY", "register_engine", "get_engine", "supports_fused", "engine_names", "check_inner_steps"]

ENGINES_REGISTRY: dict[str, MetaEngine] = {}
"""Every registered engine by name, in registration order."""


def register_engine(engine: MetaEngine) -> MetaEngine:
    """Register ``engine`` under ``engine.name``.

    Args:
        engine: an instance of a :class:`~maxl.meta.engine.MetaEngine` subclass.

    Returns:
        ``engine`` (so that a module can write ``ENGINE = register_engine(MyEngine())``).

    Raises:
        TypeError: ``engine`` is not a :class:`~maxl.meta.engine.MetaEngine`.
        ValueError: its name is empty or already registered.
    """
    if not isinstance(engine, MetaEngine):
        raise TypeError(f"register_engine expects a MetaEngine instance, got {type(engine).__name__}")
    if not engine.name:
        raise ValueError(f"{type(engine).__name__} has no name")
    if engine.name in ENGINES_REGISTRY:
        raise ValueError(
            f"a meta engine named {engine.name!r} is already registered ({ENGINES_REGISTRY[engine.name]!r})"
        )
    ENGINES_REGISTRY[engine.name] = engine
    return engine


def engine_names(order: str | None = None) -> tuple[str, ...]:
    """The registered names, in registration order; only those of ``order`` if given."""
    return tuple(n for n, e in ENGINES_REGISTRY.items() if order is None or e.order == order)


def get_engine(config_or_name: MetaConfig | str) -> MetaEngine:
    """The engine that computes the meta-gradient for a config (or registered under a name).

    Args:
        config_or_name: a :class:`maxl.meta.MetaConfig` (its ``engine_name`` is looked up) or a
            registered name.

    Returns:
        The registered :class:`~maxl.meta.engine.MetaEngine`.

    Raises:
        ValueError: no engine has that name; the message lists the registered ones.
    """
    name = config_or_name if isinstance(config_or_name, str) else config_or_name.engine_name
    try:
        return ENGINES_REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown meta engine {name!r}; registered: {engine_names()}") from None


def supports_fused(config_or_name: MetaConfig | str) -> bool:
    """Whether :func:`maxl.meta.fused_step` can run with this config's engine (``"higher"``: no).

    Raises:
        ValueError: no engine has that name.
    """
    return get_engine(config_or_name).supports_fused


def check_inner_steps(engine: MetaEngine, inner_steps: int) -> None:
    """Refuse a multi-step look-ahead (``inner_steps > 1``) for an engine that takes one step only.

    Raises:
        ValueError: ``inner_steps > 1`` and ``engine.multi_step`` is False; the message names the
            engine and those that can.
    """
    if inner_steps > 1 and not engine.multi_step:
        able = tuple(n for n, e in ENGINES_REGISTRY.items() if e.multi_step)
        raise ValueError(
            f"the meta engine {engine.name!r} takes one look-ahead step only, got inner_steps="
            f"{inner_steps}; set inner_steps=1, or use order='second' with an engine that unrolls "
            f"several steps: {able} ('func' also has the fused form)"
        )
