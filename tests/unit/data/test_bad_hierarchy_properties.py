"""Hierarchy files over the digits' classes "0".."9", generated (hypothesis).

A valid grouping (any partition of the ten classes into named groups, in JSON or TOML) loads
with ψ equal to the group sizes, the primary classes in the file's order and every image under
its class's group. A grouping with one fault (a class in no group, a class in two groups, an
unknown name, a name twice in a group, an empty group, a value that is not a list of names, a
primary class given twice, a top level that is not a mapping, bytes that are not UTF-8, a
syntax error) makes ``maxl train --hierarchy FILE`` exit with status 2 and one
``maxl: error: ...`` line that names the problem, before any network is built. The fixed
examples are in test_user_hierarchy.py; the hypothesis profile in tests/conftest.py.
"""

import contextlib
import io
import json
import tempfile
from pathlib import Path
from unittest import mock

import torch

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
from hypothesis import assume, given
from hypothesis import strategies as st

from maxl.cli.commands import main
from maxl.data.datasets import load_dataset
from maxl.data.user_hierarchy import read_hierarchy_file
from maxl.train import build as build_module

DIGITS = [str(d) for d in range(10)]
FORMAT = st.sampled_from([".json", ".toml"])
NAME = st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), max_size=6)  # TOML-safe


@st.composite
def groupings(draw) -> dict[str, list[str]]:
    """A partition of the ten classes into 1..10 groups with distinct names, in random order."""
    order = draw(st.permutations(DIGITS))
    cuts = sorted(draw(st.sets(st.integers(1, 9), max_size=9)))
    bounds = [0, *cuts, 10]
    names = draw(st.lists(NAME, min_size=len(bounds) - 1, max_size=len(bounds) - 1, unique=True))
    return {n: list(order[a:b]) for n, a, b in zip(names, bounds, bounds[1:])}


def toml_value(v) -> str:
    if isinstance(v, dict):  # an inline table
        return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)} = {toml_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return json.dumps(v, ensure_ascii=False)  # strings, finite numbers and booleans are written alike


def text_of(groups: dict, suffix: str) -> str:
    if suffix == ".json":
        return json.dumps(groups)
    return "".join(f"{json.dumps(k, ensure_ascii=False)} = {toml_value(v)}\n" for k, v in groups.items())


def cli_error(data: bytes, suffix: str, *names: str) -> str:
    """Run ``maxl train --dataset digits --hierarchy FILE`` on ``data``; check the one error line."""
    err = io.StringIO()
    accepted = AssertionError("the hierarchy was accepted: the networks were about to be built")
    with (
        tempfile.TemporaryDirectory() as tmp,
        contextlib.redirect_stderr(err),
        contextlib.redirect_stdout(io.StringIO()),
        mock.patch.object(build_module, "make_network", side_effect=accepted),
    ):
        path = Path(tmp) / f"groups{suffix}"
        path.write_bytes(data)
        status = main(
            [
                "train",
                "--dataset",
                "digits",
                "--hierarchy",
                str(path),
                "--epochs",
                "1",
                "--train-subset",
                "64",
                "--test-subset",
                "32",
                "--no-progress",
                "--out",
                str(Path(tmp) / "out"),
            ]
        )
    text = err.getvalue()
    assert status == 2, text
    assert text.endswith("\n") and text.count("\n") == 1, f"not one line: {text!r}"
    assert text.startswith("maxl: error: hierarchy ") and "Traceback" not in text, text
    for name in names:
        assert name in text, f"{name!r} not named in {text!r}"
    return text


# ----------------------------------------------------------------------------- valid groupings
@given(groupings(), FORMAT)
def test_a_valid_grouping_loads_with_psi_the_group_sizes(groups, suffix):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"groups{suffix}"
        path.write_text(text_of(groups, suffix), encoding="utf-8")
        parsed = read_hierarchy_file(path)
        data = load_dataset("digits", hierarchy=str(path))
    assert parsed.primary_names == tuple(groups) and parsed.members == tuple(tuple(v) for v in groups.values())
    assert data.psi == [len(v) for v in groups.values()]
    assert data.primary_names == list(groups)
    # the auxiliary classes: block by block, each block's classes in class order
    assert data.aux_names == [c for v in groups.values() for c in sorted(v, key=int)]
    group_of = {c: i for i, v in enumerate(groups.values()) for c in v}
    for split, aux in ((data.train, data.aux_train), (data.test, data.aux_test)):
        digit = [data.aux_names[a] for a in aux.tolist()]
        assert torch.equal(split.labels, torch.tensor([group_of[d] for d in digit]))


# ----------------------------------------------------------------------------- one fault each
@given(groupings(), FORMAT, st.data())
def test_classes_in_no_group_are_named(groups, suffix, data):
    dropped = data.draw(st.sets(st.sampled_from(DIGITS), min_size=1, max_size=9), label="dropped")
    kept = {k: [c for c in v if c not in dropped] for k, v in groups.items()}
    kept = {k: v for k, v in kept.items() if v}  # an emptied group would be another fault
    cli_error(
        text_of(kept, suffix).encode(), suffix, f"the classes {sorted(dropped, key=int)} of digits are in no group"
    )


@given(groupings(), FORMAT, st.data())
def test_a_class_in_two_groups_is_named(groups, suffix, data):
    assume(len(groups) >= 2)
    names = list(groups)
    first, second = data.draw(st.lists(st.sampled_from(names), min_size=2, max_size=2, unique=True), label="groups")
    twice = data.draw(st.sampled_from(groups[first]), label="class")
    groups[second] = groups[second] + [twice]
    owner = names.index(first) < names.index(second)  # the message names the groups in file order
    a, b = (first, second) if owner else (second, first)
    cli_error(text_of(groups, suffix).encode(), suffix, f"class {twice!r} is in two groups, {a!r} and {b!r}")


@given(groupings(), FORMAT, st.data())
def test_a_name_that_is_no_class_is_named(groups, suffix, data):
    unknown = data.draw(NAME.filter(lambda n: n not in DIGITS), label="unknown")
    where = data.draw(st.sampled_from(list(groups)), label="group")
    groups[where] = groups[where] + [unknown]
    cli_error(text_of(groups, suffix).encode(), suffix, f"[{unknown!r}] (under {where!r}) match no class of digits")


@given(groupings(), FORMAT, st.data())
def test_a_name_listed_twice_in_a_group_is_named(groups, suffix, data):
    where = data.draw(st.sampled_from(list(groups)), label="group")
    twice = data.draw(st.sampled_from(groups[where]), label="class")
    groups[where] = groups[where] + [twice]
    cli_error(text_of(groups, suffix).encode(), suffix, f"primary class {where!r} lists [{twice!r}] more than once")


@given(groupings(), FORMAT, NAME)
def test_an_empty_group_is_named(groups, suffix, empty):
    assume(empty not in groups)
    cli_error(text_of({**groups, empty: []}, suffix).encode(), suffix, f"primary class {empty!r} has no classes")


NOT_A_NAME = st.one_of(st.integers(0, 9), st.floats(0, 9), st.booleans(), st.lists(st.sampled_from(DIGITS), max_size=2))


@given(groupings(), FORMAT, st.data())
def test_a_value_that_is_not_a_list_of_names_is_named(groups, suffix, data):
    where = data.draw(st.sampled_from(list(groups)), label="group")
    if data.draw(st.booleans(), label="whole value"):
        groups[where] = data.draw(
            st.one_of(
                NAME,
                st.integers(0, 9),
                st.floats(0, 9),
                st.booleans(),
                st.dictionaries(NAME, st.sampled_from(DIGITS), max_size=2),
            ),
            label="value",
        )
    else:  # a list with an item that is not a name
        i = data.draw(st.integers(0, len(groups[where])), label="at")
        groups[where] = groups[where][:i] + [data.draw(NOT_A_NAME, label="item")] + groups[where][i:]
    cli_error(
        text_of(groups, suffix).encode(), suffix, f"primary class {where!r} maps to ", "not a list of class names"
    )


@given(groupings())
def test_a_primary_class_given_twice_in_json_is_named(groups):
    name, members = next(iter(groups.items()))
    text = json.dumps(groups)[:-1] + f", {json.dumps(name)}: {json.dumps(members)}}}"
    cli_error(text.encode(), ".json", f"the keys [{name!r}] are given more than once")


@given(st.one_of(st.lists(st.sampled_from(DIGITS), max_size=3), st.integers(), NAME, st.none(), st.just({})))
def test_a_top_level_that_is_not_a_mapping_is_named(value):
    cli_error(
        json.dumps(value).encode(), ".json", "expected a non-empty mapping of primary class -> list of class names"
    )


@given(
    groupings(),
    FORMAT,
    st.sampled_from([b"\xff", b"\xc3\x28", b"\xe2\x82", b"\xed\xa0\x80", b"\x80"]),
    st.integers(0, 10**6),
)
def test_bytes_that_are_not_utf8_are_named(groups, suffix, bad, where):
    text = text_of(groups, suffix).encode()
    cut = where % (len(text) + 1)
    data = text[:cut] + bad + text[cut:]
    try:
        data.decode("utf-8")
        assume(False)
    except UnicodeDecodeError as err:
        offset = err.start
    cli_error(data, suffix, "not UTF-8 text", f"at offset {offset})")


@given(groupings(), FORMAT, st.integers(1, 10**6))
def test_a_file_cut_short_is_unparsable(groups, suffix, where):
    text = text_of(groups, suffix)
    cut = text[: where % len(text)]
    try:
        json.loads(cut) if suffix == ".json" else tomllib.loads(cut)
        assume(False)  # still a whole document (TOML cut after a line): other tests judge it
    except ValueError:
        pass
    cli_error(cut.encode(), suffix, ": cannot parse it (")
