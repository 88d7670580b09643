"""Properties of ψ and the hierarchy-masked softmax over random ψ, labels and logits (hypothesis).

For any ψ (1..8 primary classes owning 1..6 auxiliary classes each), batch, float32 or float64
logits (moderate, ±1e4 and mixed): each row of ``masked_softmax`` is a distribution that is
exactly zero outside the block of the sample's primary class, equals a per-row loop in plain
Python floats, and stays finite (with finite gradients); logits outside the block do not matter.
Bad ψ and labels raise a ValueError that names the entry or label. The fixed examples are in
test_hierarchy.py; the hypothesis profile in tests/conftest.py.
"""

import math
import re

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from maxl.core.hierarchy import Hierarchy, masked_log_softmax, masked_softmax, validate_psi

PSI = st.lists(st.integers(1, 6), min_size=1, max_size=8)
# moderate logits, the extremes ±1e4 (exp overflows float32 beyond ~88) and anything between
LOGIT = st.one_of(st.floats(-30, 30), st.sampled_from([1e4, -1e4]), st.floats(-1e4, 1e4))
DTYPE = st.sampled_from([torch.float32, torch.float64])
# (rtol, atol) against the float64 loop; float32: the log-softmax is exact to ~1e-6 in log space
TOLERANCE = {torch.float32: (1e-5, 1e-6), torch.float64: (1e-10, 1e-13)}


@st.composite
def batches(draw, psi=PSI):
    """(ψ, primary labels int64 [B], logits [B, sum ψ]) with B in 1..12."""
    psi = draw(psi)
    size = draw(st.integers(1, 12))
    primary = draw(st.lists(st.integers(0, len(psi) - 1), min_size=size, max_size=size))
    rows = draw(st.lists(st.lists(LOGIT, min_size=sum(psi), max_size=sum(psi)), min_size=size, max_size=size))
    return psi, torch.tensor(primary, dtype=torch.long), torch.tensor(rows, dtype=draw(DTYPE))


def naive_masked_softmax(logits: torch.Tensor, primary: torch.Tensor, psi: list[int]) -> list[list[float]]:
    """Per row, in plain Python floats: a softmax over the logits of the sample's block, 0 elsewhere."""
    out = []
    for row, label in zip(logits.tolist(), primary.tolist()):
        start = sum(psi[:label])
        block = row[start : start + psi[label]]
        top = max(block)
        e = [math.exp(v - top) for v in block]
        out.append([0.0] * start + [v / sum(e) for v in e] + [0.0] * (len(row) - start - len(block)))
    return out


def block_of(primary: torch.Tensor, psi: list[int]) -> torch.Tensor:
    """bool [B, K]: True in each sample's block, built from ψ column by column."""
    owner = [i for i, k in enumerate(psi) for _ in range(k)]  # the primary class of each column
    return torch.tensor([[owner[c] == label for c in range(sum(psi))] for label in primary.tolist()])


@given(batches())
def test_rows_are_distributions_on_their_block_equal_to_a_loop(batch):
    psi, primary, logits = batch
    p = masked_softmax(logits, primary, psi)
    assert p.dtype == logits.dtype and p.shape == logits.shape
    assert torch.isfinite(p).all()
    inside = block_of(primary, psi)
    assert (p[~inside] == 0).all()  # exactly zero, not merely small
    assert ((p >= 0) & (p <= 1)).all()
    rtol, atol = TOLERANCE[logits.dtype]
    torch.testing.assert_close(p.sum(1), torch.ones(len(p), dtype=p.dtype), rtol=0, atol=10 * atol * max(psi))
    expected = torch.tensor(naive_masked_softmax(logits, primary, psi), dtype=torch.float64)
    torch.testing.assert_close(p.double(), expected, rtol=rtol, atol=atol)


@given(batches(), st.data())
def test_log_softmax_is_finite_in_the_block_and_minus_inf_outside_and_gradients_are_finite(batch, data):
    psi, primary, logits = batch
    inside = block_of(primary, psi)
    logp = masked_log_softmax(logits, primary, psi)
    assert torch.isfinite(logp[inside]).all() and (logp[inside] <= 0).all()
    assert (logp[~inside] == float("-inf")).all()
    weights = torch.tensor(
        data.draw(st.lists(st.floats(-1, 1), min_size=logits.numel(), max_size=logits.numel())), dtype=logits.dtype
    ).view_as(logits)
    x = logits.clone().requires_grad_(True)
    (masked_softmax(x, primary, psi) * weights).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert (x.grad[~inside] == 0).all()  # logits outside the block get no gradient


@given(batches(), st.data())
def test_logits_outside_the_block_do_not_change_the_distribution(batch, data):
    psi, primary, logits = batch
    inside = block_of(primary, psi)
    other = logits.clone()
    outside = int((~inside).sum())
    other[~inside] = torch.tensor(data.draw(st.lists(LOGIT, min_size=outside, max_size=outside)), dtype=logits.dtype)
    assert torch.equal(masked_softmax(other, primary, psi), masked_softmax(logits, primary, psi))


@given(PSI)
def test_the_blocks_partition_the_auxiliary_classes_in_order(psi):
    h = Hierarchy(psi)
    assert (h.num_primary, h.num_aux) == (len(psi), sum(psi))
    assert h.mask.sum(1).tolist() == psi and h.mask.sum(0).tolist() == [1] * sum(psi)  # each column in one block
    assert h.parent.tolist() == [i for i, k in enumerate(psi) for _ in range(k)]
    assert torch.equal(h.mask, block_of(torch.arange(len(psi)), psi))
    assert validate_psi(tuple(psi)) == tuple(psi)


# ----------------------------------------------------------------------------- invalid ψ and labels
NOT_AN_INT = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=3),
    st.none(),
    st.booleans(),
    st.lists(st.integers(1, 3), max_size=2),
)


@given(PSI, st.data())
def test_a_bad_entry_of_psi_is_named(psi, data):
    i = data.draw(st.integers(0, len(psi) - 1), label="index")
    bad = data.draw(st.one_of(st.integers(max_value=0), NOT_AN_INT), label="entry")
    psi = psi[:i] + [bad] + psi[i + 1 :]
    too_small = isinstance(bad, int) and not isinstance(bad, bool)
    message = rf"psi\[{i}\] = .* must be >= 1" if too_small else rf"psi\[{i}\] = .* is not an integer"
    with pytest.raises(ValueError, match=message):
        validate_psi(psi)
    with pytest.raises(ValueError, match=message):
        Hierarchy(psi)
    with pytest.raises(ValueError, match=message):
        masked_softmax(torch.zeros(1, 3), torch.zeros(1, dtype=torch.long), psi)


@given(
    st.one_of(
        st.just([]),
        st.just(()),
        st.integers(),
        st.text(max_size=4),
        st.none(),
        st.floats(),
        st.dictionaries(st.text(max_size=2), st.integers(1, 3), max_size=2),
        st.sets(st.integers(1, 3), max_size=2),
    )
)
def test_psi_that_is_not_a_non_empty_sequence_is_refused(psi):
    message = "empty" if psi in ([], ()) else "sequence of positive ints"
    with pytest.raises(ValueError, match=message):
        validate_psi(psi)
    with pytest.raises(ValueError, match=message):
        masked_log_softmax(torch.zeros(1, 3), torch.zeros(1, dtype=torch.long), psi)


@given(PSI, st.data())
def test_primary_labels_out_of_range_are_named(psi, data):
    good = st.integers(0, len(psi) - 1)
    bad = st.one_of(st.integers(-(2**40), -1), st.integers(len(psi), 2**40))  # int64 labels
    labels = data.draw(
        st.lists(st.one_of(good, bad), min_size=1, max_size=8).filter(
            lambda ls: any(not 0 <= y < len(psi) for y in ls)
        ),
        label="labels",
    )
    first_bad = next(y for y in labels if not 0 <= y < len(psi))
    message = re.escape(
        f"primary label {first_bad} is out of range: psi has {len(psi)} primary classes, so labels "
        f"must lie in [0, {len(psi) - 1}]"
    )
    with pytest.raises(ValueError, match=message):
        masked_softmax(torch.zeros(len(labels), sum(psi)), torch.tensor(labels), psi)
    with pytest.raises(ValueError, match="primary labels must be integers"):
        masked_softmax(torch.zeros(len(labels), sum(psi)), torch.tensor(labels, dtype=torch.float32), psi)


@given(PSI, st.integers(1, 40), st.integers(1, 4))
def test_logits_of_another_width_are_refused(psi, width, size):
    if width == sum(psi):
        width += 1
    with pytest.raises(ValueError, match=re.escape(f"[B, sum(psi)] = [B, {sum(psi)}], got ({size}, {width})")):
        masked_softmax(torch.zeros(size, width), torch.zeros(size, dtype=torch.long), psi)
