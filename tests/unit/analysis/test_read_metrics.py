"""read_metrics, the one reader of metrics.jsonl: a torn last line (a run killed while
appending it) is skipped with a warning; a bad line before it is corruption and raises."""

import pytest

from maxl.analysis.run import TornLineWarning, read_metrics


def test_a_torn_last_line_is_skipped_with_a_warning_naming_the_file_and_line(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1}\n{"epoch": 2}\n{"epo')
    with pytest.warns(TornLineWarning, match=rf"^{tmp_path / 'metrics.jsonl'}: skipping the truncated last line 3 "):
        assert read_metrics(tmp_path) == [{"epoch": 1}, {"epoch": 2}]


def test_a_corrupt_line_before_the_last_raises_naming_file_and_line(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1}\n{"ep\n{"epoch": 3}\n')
    with pytest.raises(ValueError, match=rf"^{tmp_path / 'metrics.jsonl'}, line 2: not JSON"):
        read_metrics(tmp_path)


def test_an_empty_file_has_no_records_and_a_missing_one_is_named(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("")
    assert read_metrics(tmp_path) == []
    with pytest.raises(FileNotFoundError, match="it has no metrics.jsonl"):
        read_metrics(tmp_path / "elsewhere")
