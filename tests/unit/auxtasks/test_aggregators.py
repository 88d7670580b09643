"""torchjd's aggregators as gradient weightings: each against its defining property, computed here
independently on small Jacobians; our MGDA and PCGrad against torchjd's; RLW against torchjd's
random weights; the options and the missing-extra error."""

import importlib.util

import pytest
import torch

from auxtasks.weighting import (
    IMTLG,
    MGDA,
    WEIGHTINGS,
    CAGrad,
    ConFIG,
    DualProj,
    FairGrad,
    GradDrop,
    NashMTL,
    PCGrad,
    RandomWeighting,
    TorchJDWeighting,
    UPGrad,
    aggregators,
    weighting_options,
)
from auxtasks.weighting.mgda import min_norm_weights
from auxtasks.weighting.options import describe_options

pytest.importorskip("torchjd", reason="the optional extra mtl: pip install 'maxl[mtl]'")
from torchjd import aggregation as jd  # noqa: E402

NAMES = ("primary", "rotation", "colourisation")


def bound(weighting, names=NAMES):
    weighting.bind(names)
    return weighting


def jacobian(seed: int, t: int = 3, p: int = 7, conflict: bool = True) -> torch.Tensor:
    """A float64 ``[T, P]`` Jacobian; with ``conflict`` its first two rows point partly apart."""
    g = torch.Generator().manual_seed(seed)
    j = torch.randn(t, p, generator=g, dtype=torch.float64)
    if conflict:
        j[1] = -0.7 * j[0] + 0.3 * j[1]
    return j


def update(weighting, j: torch.Tensor) -> torch.Tensor:
    names = tuple(["primary"] + [f"t{i}" for i in range(1, len(j))])
    w = bound(weighting, names)
    grads = {n: j[i] for i, n in enumerate(names)}
    return w.combine_gradients(grads, {n: torch.tensor(1.0) for n in names})


# ---------------------------------------------------------------- our MGDA and PCGrad vs torchjd's
@pytest.mark.parametrize("seed", range(4))
def test_our_mgda_agrees_with_torchjds(seed):
    j = jacobian(seed, t=4)
    gram = j @ j.T
    ours = min_norm_weights(gram)
    theirs = jd.MGDAWeighting(epsilon=1e-12, max_iters=100_000)(gram)
    # two Frank-Wolfe solvers (ours from the best pair, 1000 steps; torchjd's from the uniform α):
    # Frank-Wolfe converges as O(1/k), so the two agree to within a fraction of a percent
    assert float(ours @ gram @ ours) == pytest.approx(float(theirs @ gram @ theirs), rel=1e-2)
    assert (ours @ j - theirs @ j).norm() <= 5e-2 * (theirs @ j).norm()
    # the weighting's update is Σ α_t g_t with these α
    assert torch.allclose(update(MGDA(), j), ours @ j, atol=1e-8)


@pytest.mark.parametrize("seed", range(4))
def test_our_pcgrad_equals_torchjds_under_the_same_random_orders(seed):
    j = jacobian(seed, t=4)
    torch.manual_seed(seed)
    ours = update(PCGrad(), j)
    torch.manual_seed(seed)  # both draw one randperm(T) per task from torch's global generator
    theirs = jd.PCGrad()(j)
    assert torch.allclose(ours, theirs, atol=1e-10)


# ---------------------------------------------------------------- defining properties
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("cls", [UPGrad, DualProj])
def test_upgrad_and_dualproj_conflict_with_no_task(cls, seed):
    j = jacobian(seed, t=2 + seed % 3)
    d = update(cls(reg_eps=1e-9), j)  # reg_eps moves the dual cone's boundary, where DualProj lands
    norms = j.norm(dim=1) * d.norm()
    assert (j @ d >= -1e-6 * norms).all()  # d · g_i >= 0 for every task
    assert d.norm() > 0


def test_upgrad_and_dualproj_are_the_mean_without_conflict():
    j = jacobian(0, conflict=False).abs()  # all inner products positive
    for cls in (UPGrad, DualProj):
        assert torch.allclose(update(cls(), j), j.mean(0), atol=1e-3)


@pytest.mark.parametrize("seed", range(3))
def test_cagrad_at_c_zero_is_the_mean(seed):
    j = jacobian(seed)
    assert torch.allclose(update(CAGrad(c=0.0), j), j.mean(0), atol=1e-6)


def test_cagrad_improves_the_worst_task_over_the_mean():
    j = jacobian(1)
    d, mean = update(CAGrad(c=0.5), j), j.mean(0)
    assert (j @ d).min() > (j @ mean).min()


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("make", [lambda: NashMTL(max_norm=0.0, optim_niter=50), lambda: FairGrad(alpha=1.0)])
def test_nash_mtl_and_fairgrad_at_alpha_one_satisfy_the_bargaining_condition(make, seed):
    j = jacobian(seed, conflict=False)
    w = make()
    update(w, j)
    alpha = torch.tensor([w.weights()[n] for n in w.task_names], dtype=torch.float64)
    gram = j @ j.T
    assert (alpha > 0).all()
    # G Gᵀ α = 1/α element-wise, within the solvers' tolerance
    assert torch.allclose(gram @ alpha, 1 / alpha, rtol=2e-2)


@pytest.mark.parametrize("seed", range(3))
def test_imtl_g_projects_equally_onto_every_unit_gradient(seed):
    j = jacobian(seed)
    d = update(IMTLG(), j)
    proj = (j / j.norm(dim=1, keepdim=True)) @ d  # d · u_i
    assert torch.allclose(proj, proj.mean().expand_as(proj), rtol=1e-6)
    assert sum(bound_weights(IMTLG(), j)) == pytest.approx(1.0)


def bound_weights(weighting, j):
    update(weighting, j)
    return list(weighting.weights().values())


@pytest.mark.parametrize("seed", range(3))
def test_config_has_equal_positive_cosine_with_every_task(seed):
    j = jacobian(seed)
    d = update(ConFIG(), j)
    cos = (j @ d) / (j.norm(dim=1) * d.norm())
    assert (cos > 0).all() and torch.allclose(cos, cos.mean().expand_as(cos), atol=1e-6)


def test_graddrop_keeps_everything_where_the_signs_agree():
    j = jacobian(2, conflict=False).abs() * torch.tensor([1.0, -1.0] * 3 + [1.0], dtype=torch.float64)
    assert torch.allclose(update(GradDrop(), j), j.sum(0))  # each coordinate's signs agree: purity 0 or 1


def test_rlw_draws_torchjds_random_weights():
    w = bound(RandomWeighting())
    losses = {n: torch.tensor(float(i + 1), requires_grad=True) for i, n in enumerate(NAMES)}
    torch.manual_seed(3)
    total = w.combine(losses)
    torch.manual_seed(3)
    expected = jd.RandomWeighting()(torch.zeros(3, 5))
    assert torch.allclose(w.lam, expected)
    assert total.item() == pytest.approx(float(expected @ torch.tensor([1.0, 2.0, 3.0])))
    w.eval()
    w.combine(losses)  # evaluation keeps the last draw
    assert torch.allclose(w.lam, expected)


# ---------------------------------------------------------------- options and the extra
def test_options_are_checked_by_name_and_converted():
    assert weighting_options(CAGrad, {"c": "0.2"}) == {"c": 0.2}
    assert weighting_options(NashMTL, {"optim_niter": "5", "max_norm": 2}) == {"optim_niter": 5, "max_norm": 2.0}
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['cc'\].*it takes c, norm_eps"):
        weighting_options(CAGrad, {"cc": "1"})
    with pytest.raises(ValueError, match="expected an integer"):
        weighting_options(NashMTL, {"optim_niter": "2.5"})
    with pytest.raises(ValueError, match="takes none"):
        weighting_options(IMTLG, {"c": 1})
    with pytest.raises(ValueError, match="c must be non-negative"):
        CAGrad(c=-1.0)  # torchjd's own check, when the weighting is made
    assert describe_options(CAGrad).startswith("c (float, default 0.4): ")


def test_the_config_refuses_an_unknown_option_naming_the_setting():
    from maxl.cli import commands
    from maxl.train.build import AuxConfig

    assert AuxConfig(weighting="cagrad", weighting_options={"c": "0.1"}).weighting_options == {"c": "0.1"}
    with pytest.raises(ValueError, match=r"aux.weighting_options .*unknown option"):
        AuxConfig(weighting="upgrad", weighting_options={"c": "0.1"})
    assert commands.parse_weighting_options(["c=0.1", " beta = 2"]) == {"c": "0.1", "beta": "2"}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        commands.parse_weighting_options(["c"])


def test_a_missing_solver_stops_with_the_pip_line(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(aggregators, "find_spec", lambda name: None if name == "cvxpy" else real(name))
    with pytest.raises(ImportError, match=r"'cagrad' needs \['cvxpy'\].*pip install 'maxl\[mtl\]'"):
        CAGrad()
    UPGrad()  # needs no cvxpy


def test_every_torchjd_weighting_is_registered_under_its_name():
    names = {cls.NAME for cls in WEIGHTINGS.values() if isinstance(cls, type) and issubclass(cls, TorchJDWeighting)}
    expected = {"upgrad", "cagrad", "nash-mtl", "imtl-g", "aligned-mtl", "graddrop", "gradvac", "dualproj"}
    assert names == expected | {"config", "fairgrad"}
    assert WEIGHTINGS["rlw"] is RandomWeighting
