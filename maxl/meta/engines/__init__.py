"""The built-in meta-gradient engines, each registered under its name on import.

======== ================ =============== ========== ============= ==========================================
name     selected by      double backward fused form inner_steps>1 how
======== ================ =============== ========== ============= ==========================================
func     engine="func"    yes             yes        yes           torch.func, ``create_graph=True``
higher   engine="higher"  yes             no         yes           the ``higher`` package's differentiable SGD
jvp      engine="jvp"     no              yes        no            one forward-mode Jacobian-vector product
first    order="first"    no              yes        no            DARTS's central difference (approximate)
implicit order="implicit" yes (HVPs)      yes        no            implicit differentiation, K Neumann terms
======== ================ =============== ========== ============= ==========================================

Every engine and form takes ``outer_batch`` (the outer loss on another batch).
"""

# registration order (func, higher, jvp, first, implicit) is the order of ENGINES and of the CLI choices
from maxl.meta.engines.func import FuncEngine  # noqa: I001
from maxl.meta.engines.higher import HigherEngine
from maxl.meta.engines.jvp import JvpEngine
from maxl.meta.engines.first import FirstOrderEngine
from maxl.meta.engines.implicit import ImplicitEngine
from maxl.meta.registry import ENGINES_REGISTRY, engine_names

__all__ = [
    "ENGINES",
    "FUSED_ENGINES",
    "MULTI_STEP_ENGINES",
    "FuncEngine",
    "HigherEngine",
    "JvpEngine",
    "FirstOrderEngine",
    "ImplicitEngine",
]

ENGINES = engine_names("second")  # the built-in second-order engines: ("func", "higher", "jvp")
FUSED_ENGINES = tuple(n for n in ENGINES if ENGINES_REGISTRY[n].supports_fused)  # ("func", "jvp")
MULTI_STEP_ENGINES = tuple(n for n in ENGINES if ENGINES_REGISTRY[n].multi_step)  # inner_steps > 1 ("func", "higher")
