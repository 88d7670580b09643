"""``report.html`` in a real headless Chromium (slow: a browser start per check).

A tiny MAXL run on the embedded digits is visualised and its report opened in Chromium
(``experiments/report_in_browser.py``): no console or load errors, and every figure decodes to a
non-zero size. A report with a broken figure must fail the same check. Chromium comes from the
distribution's packages; without it the test is skipped and says how to install it.
"""

import base64

import pytest

from experiments.report_in_browser import check_report, find_chromium, screenshot
from maxl.cli.commands import main

pytestmark = [
    pytest.mark.slow,
    pytest.mark.integration,
    pytest.mark.skipif(
        find_chromium() is None,
        reason="needs Chromium (Debian: apt-get install chromium; or set $CHROMIUM to a Chrome / Chromium executable)",
    ),
]

FAST = [
    "--batch-size",
    "32",
    "--hidden",
    "32",
    "--no-progress",
    "--device",
    "cpu",
    "--train-subset",
    "300",
    "--test-subset",
    "150",
    "--epochs",
    "2",
]


def test_report_loads_without_errors_and_every_figure_decodes(tmp_path):
    out = tmp_path / "runs"
    assert (
        main(
            [
                "train",
                "--dataset",
                "digits",
                "--hierarchy",
                "even-odd",
                "--method",
                "maxl",
                "single",
                *FAST,
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert main(["visualise", str(out / "maxl"), "--against", str(out / "single"), "--top-k", "3"]) == 0
    result = check_report(out / "maxl" / "report.html")
    assert result["errors"] == [] and result["ok"], result
    names = {image["alt"] for image in result["images"]}
    assert {"curves.png", "embedding.png", "contingency.png", "topk-0.png", "topk-1.png"} <= names
    shot = screenshot(out / "maxl" / "report.html", tmp_path / "shot.png", size=(800, 600))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_broken_figure_fails_the_check(tmp_path):
    good = tmp_path / "good.html"
    png = base64.b64encode(
        bytes.fromhex(
            "89504e470d0a1a0a0000000d4948445200000001000000010806000000 1f15c4890000000d49444154789c6360f8cfc0f01f0005"
            "0001ff5a1d9b6c0000000049454e44ae426082".replace(" ", "")
        )
    ).decode()
    page = "<!DOCTYPE html><html><head><title>t</title></head><body>{}</body></html>"
    good.write_text(page.format(f'<img alt="one.png" src="data:image/png;base64,{png}">'))
    assert check_report(good)["ok"]
    bad = tmp_path / "bad.html"
    bad.write_text(
        page.format(
            f'<img alt="one.png" src="data:image/png;base64,{png}">'
            '<img alt="broken.png" src="data:image/png;base64,AAAA">'
        )
    )
    result = check_report(bad)
    assert not result["ok"] and any("broken.png" in e for e in result["errors"])
    assert [i["width"] for i in result["images"]] == [1, 0]
