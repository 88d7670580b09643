"""The Gumbel temperature's settings: ``generator.gumbel_tau`` (--gumbel-tau), ``generator.gumbel_tau_end``
(--gumbel-tau-end), the linear schedule between them, and the errors."""

import pytest

from maxl.cli.commands import build_parser, run_configs
from maxl.train.build import RunConfig
from maxl.train.config import GeneratorConfig
from maxl.train.schedules import gumbel_temperature


def parse(*argv):
    return run_configs(build_parser().parse_args(["train", *argv]))


def test_the_flags_set_the_temperatures():
    [run], _ = parse("--method", "maxl", "--gumbel-tau", "2", "--gumbel-tau-end", "0.5")
    assert run.generator.gumbel_tau == 2.0 and run.generator.gumbel_tau_end == 0.5
    [plain], _ = parse("--method", "maxl")
    assert plain.generator.gumbel_tau == 0.0 and plain.generator.gumbel_tau_end is None  # the paper's soft labels
    assert RunConfig.from_dict(run.to_dict()) == run


def test_the_temperature_falls_linearly_from_the_first_to_the_last_epoch():
    assert [gumbel_temperature(2.0, 0.5, e, 4) for e in range(4)] == pytest.approx([2.0, 1.5, 1.0, 0.5])
    assert gumbel_temperature(2.0, 0.5, 0, 1) == 2.0  # one epoch: the start
    assert [gumbel_temperature(1.0, None, e, 3) for e in range(3)] == [1.0, 1.0, 1.0]  # no schedule


def test_bad_temperatures_are_refused():
    with pytest.raises(ValueError, match="gumbel_tau must be >= 0"):
        GeneratorConfig(gumbel_tau=-1.0)
    with pytest.raises(ValueError, match="gumbel_tau_end must be > 0"):
        GeneratorConfig(gumbel_tau=1.0, gumbel_tau_end=0.0)
    with pytest.raises(ValueError, match="gumbel_tau_end needs a start temperature"):
        parse("--method", "maxl", "--gumbel-tau-end", "0.3")
