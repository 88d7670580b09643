"""``maxl demo`` ends with the MAXL run's report.html and a plain sentence on its generated labels
(one epoch per method on the embedded digits, about 25 s on one thread: the report's t-SNE is
most of it); the sentence's wording for every kind of labels."""

import json
import math

import pytest

from maxl.cli.commands import main
from maxl.cli.demo import describe_generated_labels

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]  # tests/conftest.py


def test_demo_writes_the_maxl_report_and_says_what_the_labels_did(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--epochs", "1", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    report = out / "maxl" / "report.html"
    assert report.is_file()
    page = report.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert page.count('src="data:image/png;base64,') >= 13  # curves, 10 label grids, label usage, embedding
    for figure in ("topk-0.png", "topk-9.png", "label-usage.png", "embedding.png"):
        assert f'id="{figure}"' in page
    assert "maxl run maxl" in page and "single" in page  # the single-task run is drawn beside it
    last = json.loads((out / "maxl" / "metrics.jsonl").read_text().splitlines()[-1])
    assert lines[-2] == f"after epoch 1 {describe_generated_labels(last)}; see {report}"
    assert lines[-1] == f"report: {report}"
    assert f"sharpness {last['label_sharpness']:.2f}" in lines[-2]
    assert f"({last['label_used_fraction'] * 100:.0f} %)" in lines[-2]


def test_demo_under_another_rank_writes_no_report(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RANK", "1")  # as a torchrun worker would see it; one process, no group
    out = tmp_path / "demo"
    assert main(["demo", "--epochs", "1", "--out", str(out)]) == 0
    assert not (out / "maxl" / "report.html").exists() and "report:" not in capsys.readouterr().out


RECORD = {"label_counts": [3, 0, 5, 1, 0, 2, 7, 0, 4, 0]}  # 6 of 10 used


@pytest.mark.parametrize(
    "sharpness, used, nmi, expected",
    [
        (
            0.09,
            0.38,
            None,
            [
                "stayed near uniform inside each primary class (sharpness 0.09",
                "only 6 of the 10 auxiliary classes (38 %) are any training image's most probable label",
                "on this data MAXL's labels carry little information",
            ],
        ),
        (
            0.01,
            1.0,
            0.02,
            ["stayed uniform", "(100 %) are some training image's", "NMI 0.02", "carry little information"],
        ),
        (0.4, 0.3, None, ["are soft", "only 6 of", "collapsed onto a few auxiliary classes per primary class"]),
        (0.8, 0.9, 0.6, ["became nearly one-hot", "NMI 0.60", "groups close to the human ones"]),
        (0.8, 0.9, 0.05, ["groups unrelated to the human ones"]),
        (0.8, 0.9, 0.3, ["groups that partly follow the human ones"]),
        (0.8, 0.9, None, ["whether the groups mean anything, only the label grids can tell"]),
    ],
)
def test_the_sentence_says_plainly_what_the_labels_did(sharpness, used, nmi, expected):
    record = {**RECORD, "label_sharpness": sharpness, "label_used_fraction": used}
    if nmi is not None:
        record["label_nmi_human"] = nmi
    sentence = describe_generated_labels(record)
    assert sentence.startswith("the generated labels ")
    for part in expected:
        assert part in sentence
    if nmi is None:
        assert "NMI" not in sentence


def test_the_sentence_of_labels_without_choice_or_statistics():
    assert "carry no information" in describe_generated_labels(
        {"label_sharpness": math.nan, "label_used_fraction": 1.0}
    )
    with pytest.raises(ValueError, match="no label statistics"):
        describe_generated_labels({"epoch": 3, "test_acc": 0.5})
