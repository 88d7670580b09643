"""Ops without a usable double backward: the graph walk and the error translation.

The exact meta-gradient of the double-backward engines (``"func"``, ``"higher"``) differentiates
the multi-task network's backward, ∂²L_aux/∂θ1∂θ2 (Liu, Davison, Johns, NeurIPS 2019, Eq. 4).
Two kinds of ops break this:

* ops whose double backward is "not implemented": autograd raises when it reaches them, naming
  the op; :func:`explain_double_backward_errors` re-raises with the fix;
* custom ``autograd.Function``\\ s marked ``@once_differentiable`` (common in hand-written
  kernels): their gradient's own graph ends in an error node cut off from θ2, autograd never
  visits it, and the meta-gradient silently loses every path through that op (the failure the
  MAXL reference had before 2019-01-29, from another cause). :func:`check_double_backward`
  walks the graph to find it.

The fix in both cases is the first-order variant (``order="first"``), which needs no double
backward; ``"jvp"`` needs none of the network either.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import Tensor

__all__ = ["DoubleBackwardError", "check_double_backward", "explain_double_backward_errors", "FIRST_ORDER_HINT"]

FIRST_ORDER_HINT = (
    "use the first-order variant, which needs no double backward: --meta-order first on the "
    "command line, MetaConfig(order='first') in code"
)


class DoubleBackwardError(RuntimeError):
    """The exact (second-order) meta-gradient needs the backward of every op of the
    multi-task network to be differentiable itself, and one is not."""


def check_double_backward(outer: Tensor) -> None:
    """Raise :class:`DoubleBackwardError` if the graph of the outer loss holds an error node.

    A walk over the graph (about 500 nodes for VGG-16 with both heads, ~2 ms); a trainer does it
    on its first step only.

    Args:
        outer: the scalar whose ∇θ2 will be taken (L_pri(θ1⁺) with its graph through the
            ``create_graph=True`` inner gradient).

    Raises:
        DoubleBackwardError: a node of the graph is autograd's ``Error`` node, the backward of
            a ``@once_differentiable`` op.
    """
    seen, stack = set(), [outer.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if fn.name() == "torch::autograd::Error":
            raise DoubleBackwardError(
                "the exact second-order meta-gradient cannot be computed: an op of the multi-task "
                "network has a backward that autograd cannot differentiate again (a custom "
                "autograd.Function marked @once_differentiable), so the meta-gradient would silently "
                f"lose every path through that op; {FIRST_ORDER_HINT}"
            )
        stack.extend(f for f, _ in fn.next_functions)


@contextmanager
def explain_double_backward_errors(enabled: bool = True) -> Iterator[None]:
    """Re-raise autograd's "not implemented" / "differentiate twice" errors inside the block as
    :class:`DoubleBackwardError` with the fix; other errors pass unchanged.

    Args:
        enabled: translate (the engine differentiates the network's backward) or not.

    Raises:
        DoubleBackwardError: from such an error of autograd, chained to it.
    """
    try:
        yield
    except (RuntimeError, NotImplementedError) as err:
        if not enabled or isinstance(err, DoubleBackwardError):
            raise
        text = str(err)
        if ("derivative for" in text and "not implemented" in text) or "differentiate twice" in text:
            raise DoubleBackwardError(
                f"the exact second-order meta-gradient needs the double backward of every op of the "
                f"multi-task network, and autograd has none for one of them ({text.strip()}); {FIRST_ORDER_HINT}"
            ) from err
        raise
