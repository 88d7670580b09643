"""Bad configuration files and command-line values, generated (hypothesis): every one ends in
exit status 2 and exactly one ``maxl: error: ...`` line on stderr that names the offending setting
or problem, and never in a traceback.

``maxl train --config FILE --dataset digits ...`` is driven through :func:`maxl.cli.commands.main`
with files (TOML or JSON) that hold one fault each: a value of the wrong type for a known setting,
an unknown setting in a known section, an unknown section, a section that is not a table, a value
out of range, an unknown name, bytes that are not UTF-8, a syntax error, a JSON top level that is
not an object. The builder is replaced by a function that fails the test: each fault must be
refused while the settings are read, before a data set is loaded (a valid file would train).
The fixed examples are in test_build.py; the hypothesis profile in tests/conftest.py.
"""

import contextlib
import dataclasses
import io
import json
import math
import re
import tempfile
import types
import typing
from pathlib import Path
from unittest import mock

import pytest
import torch

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
from hypothesis import assume, given
from hypothesis import strategies as st

from auxtasks import COLOURISATION_MODES, ROTATION_MODES, WEIGHTINGS
from maxl.cli import commands
from maxl.core.losses import LOSSES
from maxl.data.datasets import DATASETS
from maxl.meta import ORDERS, MetaConfig
from maxl.meta.registry import engine_names
from maxl.nn.architectures import ARCHITECTURES, PENALTIES
from maxl.nn.backbones import BACKBONES
from maxl.train.build import DERIVED, GENERATORS, SECTIONS, RunConfig
from maxl.train.config import GEN_OPTIMIZERS, LR_SCHEDULES, METHODS, SCHEDULES
from maxl.train.presets import PRESET_CHOICES

ARGV = ["--dataset", "digits", "--epochs", "1", "--train-subset", "64", "--test-subset", "32", "--no-progress"]
BASE = {
    "data": {"train_subset": 64},
    "model": {"hidden": 8},
    "train": {"epochs": 1, "batch_size": 32, "meta": {"engine": "func"}},
    "objective": {"entropy_weight": 0.2},
}
FORMAT = st.sampled_from([".toml", ".json"])
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), max_size=8)  # TOML-safe strings
NAME = st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), min_size=1, max_size=12)


# ----------------------------------------------------------------------------- helpers
def cli(argv: list[str]) -> tuple[int, str]:
    """(exit status, stderr) of ``maxl ARGV``, with the builder replaced by a test failure."""
    err = io.StringIO()
    refused = AssertionError(f"maxl {' '.join(argv)} was accepted and would train")
    with (
        contextlib.redirect_stderr(err),
        contextlib.redirect_stdout(io.StringIO()),
        mock.patch.object(commands, "build", side_effect=refused),
    ):
        try:
            status = commands.main(argv)
        except SystemExit as stop:  # argparse's errors
            status = stop.code
    return status, err.getvalue()


def assert_one_error_line(status: int, err: str, *names: str) -> str:
    """Exit status 2 and one ``maxl: error:`` line on stderr that contains each of ``names``."""
    assert status == 2, err
    assert err.endswith("\n") and err.count("\n") == 1, f"not one line: {err!r}"
    assert err.startswith("maxl: error: ") and "Traceback" not in err, err
    for name in names:
        assert name in err, f"{name!r} not named in {err!r}"
    return err


def assert_names(err: str, key: str) -> None:
    """The message names the setting ``key`` as a word (``lr``, not the ``lr`` of ``gen_lr``)."""
    assert re.search(rf"(?<!\w){re.escape(key)}(?!\w)", err), f"{key} not named in {err!r}"


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)  # a TOML basic string for the characters of TEXT
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"TOML has no {type(v).__name__}")


def to_toml(tree: dict, prefix: tuple[str, ...] = ()) -> str:
    """TOML text of a tree: a table's plain values first, then its sub-tables under headers."""
    lines = [
        f"{json.dumps(k, ensure_ascii=False)} = {toml_value(v)}" for k, v in tree.items() if not isinstance(v, dict)
    ]
    for k, v in tree.items():
        if isinstance(v, dict):
            path = (*prefix, k)
            lines += ["[" + ".".join(json.dumps(p, ensure_ascii=False) for p in path) + "]", to_toml(v, path)]
    return "\n".join(lines) + "\n"


def write(tmp: str, tree_or_bytes, suffix: str) -> Path:
    path = Path(tmp) / f"run{suffix}"
    data = (
        tree_or_bytes
        if isinstance(tree_or_bytes, bytes)
        else (json.dumps(tree_or_bytes) if suffix == ".json" else to_toml(tree_or_bytes)).encode()
    )
    path.write_bytes(data)
    return path


def with_setting(path: str, value, key: str | None = None) -> dict:
    """A copy of BASE with the dotted setting ``path`` set to ``value`` (or, with ``key``, the entry
    ``key`` of the section ``path``: a key that may hold dots)."""
    tree = json.loads(json.dumps(BASE))
    *parents, last = path.split(".") if key is None else (*path.split("."), key)
    node = tree
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value
    return tree


def config_error(tree_or_bytes, suffix: str, *names: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = write(tmp, tree_or_bytes, suffix)
        status, err = cli(["train", "--config", str(path), *ARGV, "--out", str(Path(tmp) / "out")])
    return assert_one_error_line(status, err, *names)


# ----------------------------------------------------------------------------- the settings and their types
def _is_union(tp) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def kinds(tp) -> set[str]:
    """The kinds of TOML / JSON value a setting of annotation ``tp`` takes."""
    if _is_union(tp):
        return set().union(*(kinds(a) for a in typing.get_args(tp)))
    simple = {type(None): {"none"}, bool: {"bool"}, int: {"int"}, float: {"int", "float"}, str: {"str"}}
    if tp in simple:
        return simple[tp]
    if typing.get_origin(tp) is list:
        return {"list"}
    if typing.get_origin(tp) is dict or dataclasses.is_dataclass(tp):
        return {"dict"}
    raise AssertionError(f"a setting of a new kind of type {tp}: teach this test its wrong values")


CANDIDATES = {
    "none": st.none(),
    "bool": st.booleans(),
    "int": st.integers(-5, 10**6),
    "float": st.floats(-1e6, 1e6),
    "str": TEXT,
    "list": st.lists(st.integers(0, 3), max_size=3),
    "dict": st.dictionaries(TEXT, st.integers(0, 3), max_size=2),
}
NON_FINITE = st.sampled_from([math.nan, math.inf, -math.inf])


def wrong_values(tp, suffix: str) -> st.SearchStrategy:
    """Values that are not of the annotation ``tp``: other kinds, non-finite numbers, and lists or
    tables with wrong items."""
    ok = kinds(tp)
    options = [s for k, s in CANDIDATES.items() if k not in ok and (k != "none" or suffix == ".json")] + [NON_FINITE]
    for arg in typing.get_args(tp) if _is_union(tp) else (tp,):
        if typing.get_origin(arg) is list:
            options.append(st.lists(wrong_values(typing.get_args(arg)[0], suffix), min_size=1, max_size=3))
        if typing.get_origin(arg) is dict:
            options.append(st.dictionaries(TEXT, wrong_values(typing.get_args(arg)[1], suffix), min_size=1, max_size=2))
    return st.one_of(options)


def _settings() -> dict[str, object]:
    """Every setting of a run's file, dotted path -> annotation."""
    out = {}
    for section, kind in {**SECTIONS, "train.meta": MetaConfig}.items():
        hints = typing.get_type_hints(kind)
        out.update({f"{section}.{f.name}": hints[f.name] for f in dataclasses.fields(kind)})
    hints = typing.get_type_hints(RunConfig)
    out.update({f.name: hints[f.name] for f in dataclasses.fields(RunConfig) if f.name not in SECTIONS})
    return out


SETTINGS = _settings()
SECTION_KEYS = {
    s: {p.rsplit(".", 1)[1] for p in SETTINGS if p.rsplit(".", 1)[0] == s} for s in (*SECTIONS, "train.meta")
}


# ----------------------------------------------------------------------------- configuration files
@given(FORMAT, st.sampled_from(sorted(SETTINGS)), st.data())
def test_a_value_of_the_wrong_type_is_named(suffix, path, data):
    value = data.draw(wrong_values(SETTINGS[path], suffix), label="value")
    err = config_error(with_setting(path, value), suffix, f"{path} = ")
    assert "expected " in err


FIRST_WRONG = {"str": "x", "int": 7, "float": 2.5, "bool": True, "list": [1], "dict": {"k": 1}}


@pytest.mark.parametrize("path", sorted(SETTINGS))
def test_every_setting_refuses_a_value_of_another_kind(path):
    """One wrong value for each setting (the property above draws a few settings per run)."""
    kind = next(k for k in FIRST_WRONG if k not in kinds(SETTINGS[path]))
    config_error(with_setting(path, FIRST_WRONG[kind]), ".toml", f"{path} = {FIRST_WRONG[kind]!r} (")


@given(FORMAT, st.sampled_from(sorted(SECTION_KEYS)), NAME)
def test_an_unknown_setting_in_a_known_section_is_named(suffix, section, key):
    assume(key not in SECTION_KEYS[section] and key not in DERIVED.get(section, ()))
    config_error(with_setting(section, 1, key=key), suffix, f"unknown settings [{key!r}] in section [{section}]")


INT64 = st.integers(-(2**63), 2**63 - 1)  # TOML's integers


@given(FORMAT, NAME, st.one_of(INT64, TEXT, st.dictionaries(TEXT, st.integers(0, 3), max_size=2)))
def test_an_unknown_section_is_named(suffix, name, value):
    assume(name not in {f.name for f in dataclasses.fields(RunConfig)} | {"labels", "env", "resumed"})
    config_error({**BASE, name: value}, suffix, f"unknown run settings [{name!r}]")


@given(
    FORMAT,
    st.sampled_from(sorted(SECTIONS)),
    st.one_of(INT64, TEXT, st.booleans(), st.lists(st.integers(0, 3), max_size=2)),
)
def test_a_section_that_is_not_a_table_is_named(suffix, section, value):
    config_error({**BASE, section: value}, suffix, f"section [{section}] must be a table of settings")


def below(bound, *, strict=False):
    return st.floats(max_value=bound, exclude_max=strict, allow_nan=False, allow_infinity=False, min_value=-1e9)


def above(bound, *, strict=False):
    return st.floats(min_value=bound, exclude_min=strict, allow_nan=False, allow_infinity=False, max_value=1e9)


# setting -> values out of its range; the message must name the setting
OUT_OF_RANGE = {
    "train.epochs": st.integers(-(10**6), 0),
    "train.batch_size": st.integers(-(10**6), 1),
    "train.lr": below(0),
    "generator.lr": below(0),
    "train.momentum": below(0, strict=True),
    "train.weight_decay": below(0, strict=True),
    "generator.weight_decay": below(0, strict=True),
    "train.lr_step": st.integers(-(10**6), 0),
    "train.lr_gamma": below(0),
    "train.warmup": below(0) | above(1),
    "train.focal_gamma": below(0, strict=True),
    "generator.every": st.integers(-(10**6), 0),
    "train.seed": st.integers(-(2**40), -1) | st.integers(2**32, 2**62),
    "generator.gumbel_tau_end": below(0),
    "train.meta.inner_lr": below(0),
    "objective.entropy_weight": below(0, strict=True),
    "objective.image_entropy_weight": below(0, strict=True),
    "objective.consistency_weight": below(0, strict=True),
    "objective.consistency_colour": below(0, strict=True) | above(1),
    "objective.consistency_rotation": below(0, strict=True) | above(180, strict=True),
    "train.meta.inner_steps": st.integers(-(10**6), 0),
    "train.meta.neumann_terms": st.integers(-(10**6), -1),
    "train.meta.fd_epsilon": below(0),
    "model.hidden": st.integers(-(10**6), -1),
    "generator.image_weight_range": below(0, strict=True),
    "generator.gumbel_tau": below(0, strict=True),
    "model.soft_weight": below(0, strict=True),
    "model.psi": st.one_of(
        st.integers(-(10**6), 0),
        st.lists(st.integers(-3, 4), min_size=1, max_size=4).filter(lambda ls: min(ls) < 1),
        st.sampled_from(["0", "-2", "3,0", "2, -1", "", ",", "a", "2,b", "1.5", "[2]"]),
    ),
    "data.train_subset": st.integers(-(10**6), 0),
    "data.test_subset": st.integers(-(10**6), 0),
    "data.val_subset": st.integers(-(10**6), 0),
    "data.resize": st.integers(-(10**6), 0),
    "data.normalisation": st.one_of(
        st.tuples(above(-1), below(0)).map(list), st.lists(above(0.1), max_size=5).filter(lambda ls: len(ls) != 2)
    ),
    "baselines.ae_epochs": st.integers(-(10**6), -1),
    "baselines.ae_latent": st.integers(-(10**6), 0),
    "threads": st.integers(-(10**6), 0),
}


@given(FORMAT, st.sampled_from(sorted(OUT_OF_RANGE)), st.data())
def test_a_value_out_of_range_is_named(suffix, path, data):
    value = data.draw(OUT_OF_RANGE[path], label="value")
    err = config_error(with_setting(path, value), suffix)
    key = path.rsplit(".", 1)[-1]
    assert_names(err, key)


# setting -> its names; anything else must be refused with a message that names the setting
CHOICES = {
    "data.dataset": DATASETS,
    "data.padding_mode": ("constant", "reflect"),
    "model.backbone": tuple(BACKBONES),
    "model.arch": ARCHITECTURES,
    "generator.network": GENERATORS,
    "model.soft_penalty": PENALTIES,
    "train.method": METHODS,
    "generator.schedule": SCHEDULES,
    "train.loss": LOSSES,
    "train.lr_schedule": LR_SCHEDULES,
    "generator.optimizer": GEN_OPTIMIZERS,
    "generator.meta_batch": ("same", "other"),
    "train.meta.order": ORDERS,
    "train.meta.engine": engine_names("second"),
    "aux.weighting": tuple(WEIGHTINGS),
    "aux.rotation_mode": ROTATION_MODES,
    "aux.colourisation_mode": COLOURISATION_MODES,
    "preset": PRESET_CHOICES,
}
SAID_AS = {"model.arch": "architecture"}  # the message's word for the setting, where it is not its key


@given(FORMAT, st.sampled_from(sorted(CHOICES)), st.one_of(TEXT, st.sampled_from(["", "None", "MAXL", "auto "])))
def test_an_unknown_name_is_refused_naming_the_setting_and_the_name(suffix, path, name):
    assume(name not in CHOICES[path])
    err = config_error(with_setting(path, name), suffix, repr(name))
    word = SAID_AS.get(path, path.rsplit(".", 1)[-1])
    assert_names(err, word)


@given(FORMAT, st.lists(st.one_of(TEXT, st.sampled_from(["rotation", "colourisation"])), min_size=1, max_size=3))
def test_unknown_auxiliary_tasks_are_named(suffix, tasks):
    unknown = [t for t in tasks if t not in ("rotation", "colourisation")]
    assume(unknown)
    config_error(with_setting("aux.tasks", tasks), suffix, f"unknown auxiliary tasks {unknown!r}")


@given(FORMAT, TEXT)
def test_a_device_that_torch_cannot_parse_is_named(suffix, device):
    assume(device != "auto")
    try:
        torch.device(device)
        assume(False)  # a device torch knows (it need not be present): not bad input
    except (RuntimeError, ValueError):
        pass
    config_error(with_setting("train.device", device), suffix, f"device {device!r} is not a device")


# ----------------------------------------------------------------------------- files that are no configuration
BAD_UTF8 = st.sampled_from(
    [b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xe2\x82", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80", b"\xc0\xaf"]
)


@given(FORMAT, BAD_UTF8, st.integers(0, 10**6), st.binary(max_size=20))
def test_bytes_that_are_not_utf8_are_refused(suffix, bad, where, noise):
    text = (json.dumps(BASE) if suffix == ".json" else to_toml(BASE)).encode()
    cut = where % (len(text) + 1)
    data = text[:cut] + bad + noise + text[cut:]
    try:
        data.decode("utf-8")
        assume(False)
    except UnicodeDecodeError as err:
        offset = err.start
    config_error(data, suffix, "not UTF-8 text", f"at offset {offset})")


def _toml_error(text: str) -> bool:
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return True
    return False


def _json_error(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return True
    return False


@given(
    FORMAT,
    st.one_of(
        st.text(st.characters(codec="utf-8"), max_size=30),
        st.integers(0, 10**6),
        st.sampled_from(
            [
                "a = [",
                "[train\nepochs = 1",
                "[train]\nepochs = = 1",
                "x = 1\nx = 2",
                '{"train": {',
                "{'a': 1}",
                "[1, 2,]",
                '{"a": 1,}',
                "epochs = 01",
                '"a" = "\\q"',
            ]
        ),
    ),
)
def test_syntax_errors_are_reported_as_unparsable(suffix, text):
    if isinstance(text, int):  # a valid file, cut short
        whole = json.dumps(BASE) if suffix == ".json" else to_toml(BASE)
        text = whole[: text % len(whole)]
    assume((_json_error if suffix == ".json" else _toml_error)(text))
    with tempfile.TemporaryDirectory() as tmp:
        path = write(tmp, text.encode("utf-8"), suffix)
        status, err = cli(["train", "--config", str(path), *ARGV, "--out", str(Path(tmp) / "out")])
    assert_one_error_line(status, err, f"--config {path}: cannot parse it (")


JSON_KINDS = {list: "array", int: "number", float: "number", str: "string", type(None): "null", bool: "boolean"}


@given(
    st.one_of(
        st.lists(st.integers(0, 3), max_size=3),
        st.integers(),
        st.floats(allow_nan=False),
        TEXT,
        st.none(),
        st.booleans(),
    )
)
def test_a_json_top_level_that_is_not_an_object_is_refused(value):
    config_error(
        json.dumps(value).encode(), ".json", "expected a table of sections", f"got a JSON {JSON_KINDS[type(value)]}"
    )


# ----------------------------------------------------------------------------- command-line values
def flag_error(*argv: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        status, err = cli(["train", *ARGV, *argv, "--out", str(Path(tmp) / "out")])
    return assert_one_error_line(status, err)


NUMBER_TEXT = st.one_of(
    TEXT,
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers().map(str),
    st.sampled_from(["nan", "-inf", "1e999", "0x10", "1,5", "", " "]),
)


@given(
    st.sampled_from(
        [
            "--lr",
            "--gen-lr",
            "--momentum",
            "--weight-decay",
            "--warmup",
            "--inner-lr",
            "--consistency-colour",
            "--lr-gamma",
        ]
    ),
    NUMBER_TEXT,
)
def test_a_bad_float_flag_is_named(flag, text):
    try:
        value = float(text)
    except ValueError:  # argparse refuses it
        assert_one_error_line(*cli(["train", f"{flag}={text}"]), f"argument {flag}: invalid float value")
        return
    path = commands.OPTIONS[flag][0]
    valid = math.isfinite(value) and {
        "train.momentum": value >= 0,
        "train.weight_decay": value >= 0,
        "train.warmup": 0 < value < 1,
        "objective.consistency_colour": 0 <= value < 1,
    }.get(path, value > 0)
    assume(not valid)
    err = flag_error(f"{flag}={text}")
    key = path.rsplit(".", 1)[-1]
    assert_names(err, key)


@given(
    st.sampled_from(
        [
            "--batch-size",
            "--epochs",
            "--lr-step",
            "--gen-every",
            "--inner-steps",
            "--threads",
            "--train-subset",
            "--test-subset",
            "--val-subset",
            "--hidden",
            "--seed",
            "--resize",
        ]
    ),
    st.one_of(NUMBER_TEXT, st.integers(-(10**6), 1).map(str)),
)
def test_a_bad_int_flag_is_named(flag, text):
    try:
        value = int(text)
    except ValueError:
        assert_one_error_line(*cli(["train", f"{flag}={text}"]), f"argument {flag}: invalid int value")
        return
    path = commands.OPTIONS[flag][0]
    smallest = {"train.batch_size": 2, "model.hidden": 0, "train.seed": 0}.get(path, 1)
    assume(value < smallest or (path == "train.seed" and value >= 2**32))
    err = flag_error(f"{flag}={text}")
    key = path.rsplit(".", 1)[-1]
    assert_names(err, key)


def _positive_int(text: str) -> bool:
    try:
        return int(text) >= 1
    except ValueError:
        return False


@given(
    st.one_of(
        st.lists(st.integers(-3, 6), min_size=1, max_size=10)
        .filter(lambda ls: min(ls) < 1)
        .map(lambda ls: ",".join(map(str, ls))),
        TEXT,
        st.sampled_from(["", ",", " , ", "2,,0", "1.5", "5e1", "[2,3]"]),
    )
)
def test_a_bad_psi_flag_is_named(text):
    parts = [p for p in text.replace(" ", "").split(",") if p]
    assume(not parts or not all(_positive_int(p) for p in parts))  # ints >= 1 (the count needs the data set)
    assert_names(flag_error(f"--psi={text}"), "psi")


@given(st.sampled_from(sorted(flag for flag, (_, kw) in commands.OPTIONS.items() if "choices" in kw)), TEXT)
def test_an_unknown_choice_is_named_by_argparse_in_one_line(flag, value):
    assume(value not in commands.OPTIONS[flag][1]["choices"])
    assert_one_error_line(*cli(["train", f"{flag}={value}"]), f"argument {flag}: invalid choice: {value!r}")


@given(st.text(st.sampled_from("abcxyz-_"), min_size=1, max_size=8), st.sampled_from(["train", "demo"]))
def test_an_unknown_flag_is_named(name, command):
    flag = f"--zz{name}"
    assert_one_error_line(*cli([command, flag]), "unrecognized arguments", flag)


@given(
    st.one_of(
        TEXT.filter(lambda t: "=" not in t),
        st.sampled_from(["=1", "rotation=", "rotation=x", " =2"]),
        st.tuples(TEXT, TEXT).map("=".join),
    )
)
def test_a_bad_aux_weight_is_named(item):
    name, _, value = item.partition("=")
    try:
        weight = float(value)
    except ValueError:
        weight = None
    if weight is not None and name.strip():  # parsed as TASK=WEIGHT: refused if not finite
        assume(not math.isfinite(weight))
        assert "aux.weights = " in flag_error(f"--aux-weight={item}")
    else:
        assert f"--aux-weight {item!r}: expected TASK=WEIGHT" in flag_error(f"--aux-weight={item}")
