"""Open a run's ``report.html`` in a real headless Chromium and check what a user would see.

The page is loaded from a temporary copy that carries a small probe script: it records every
uncaught error, failed resource and ``console.error`` call from the start of the page, and after
the ``load`` event writes them, with each image's decoded size (``naturalWidth`` x
``naturalHeight``), into the DOM; ``chromium --headless --dump-dom`` prints that DOM. Chromium's
own console log (``--enable-logging=stderr``) is scanned too. The check passes when there is no
error and every figure decoded to a non-zero size.

    python experiments/report_in_browser.py runs/mnist/maxl/report.html --screenshot figures/report.png

Chromium comes from the distribution (Debian: ``apt-get install chromium``); it is looked for
as ``chromium``, ``chromium-browser``, ``google-chrome`` or ``$CHROMIUM``.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["find_chromium", "check_report", "screenshot", "main"]

_PROBE = """<script>
window.__maxl = {errors: []};
window.addEventListener("error", (e) => {
  const where = e.target && e.target !== window ? (e.target.alt || e.target.tagName) : (e.filename || "");
  window.__maxl.errors.push("error: " + (e.message || "failed to load") + " " + where);
}, true);
window.addEventListener("unhandledrejection", (e) => window.__maxl.errors.push("unhandled rejection: " + e.reason));
const __maxlConsoleError = console.error;
console.error = (...args) => {
  window.__maxl.errors.push("console.error: " + args.join(" ")); __maxlConsoleError(...args);
};
window.addEventListener("load", () => {
  const images = Array.from(document.images).map((img) => ({
    alt: img.alt, complete: img.complete, width: img.naturalWidth, height: img.naturalHeight}));
  const out = document.createElement("pre");
  out.id = "maxl-check";
  out.textContent = JSON.stringify({title: document.title, images: images, errors: window.__maxl.errors});
  document.body.appendChild(out);
});
</script>"""
_RESULT = re.compile(r'<pre id="maxl-check">(.*?)</pre>', re.S)
# lines of Chromium's own log that report the page's console (not the browser's dbus / GPU chatter)
_CONSOLE = re.compile(r"CONSOLE\(\d+\)|Uncaught|console\.error", re.I)


def find_chromium() -> str | None:
    """The path of a Chromium / Chrome executable, or None."""
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and (path := shutil.which(name)):
            return path
    return None


def _run(chromium: str, args: list[str], timeout: float) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:  # a fresh profile: no state shared between runs
        command = [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={profile}",
            *args,
        ]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def check_report(report: str | os.PathLike, chromium: str | None = None, timeout: float = 120) -> dict:
    """Load ``report`` in headless Chromium.

    Args:
        report: an HTML file (a run's ``report.html``).
        chromium: the browser executable (default: :func:`find_chromium`).
        timeout: seconds before the browser is given up on.

    Returns:
        ``{"title", "images": [{"alt", "complete", "width", "height"}], "errors": [str],
        "ok": bool}``; ``ok`` when there are no errors, at least one image, and every image
        is complete with a non-zero decoded size.

    Raises:
        FileNotFoundError: no report, or no Chromium.
        RuntimeError: Chromium did not print the probed page (the message holds its log).
    """
    report = Path(report).resolve()
    if not report.is_file():
        raise FileNotFoundError(f"{report}: no such report")
    chromium = chromium or find_chromium()
    if chromium is None:
        raise FileNotFoundError(
            "no Chromium found (chromium, chromium-browser, google-chrome or $CHROMIUM); "
            "install it, e.g. apt-get install chromium"
        )
    page = report.read_text(encoding="utf-8")
    head = page.find("<head>")
    probed = page[: head + 6] + _PROBE + page[head + 6 :] if head >= 0 else _PROBE + page
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / report.name
        copy.write_text(probed, encoding="utf-8")
        done = _run(
            chromium,
            ["--dump-dom", "--virtual-time-budget=10000", "--enable-logging=stderr", "--v=0", copy.as_uri()],
            timeout,
        )
    found = _RESULT.search(done.stdout)
    if found is None:
        raise RuntimeError(
            f"Chromium (exit {done.returncode}) printed no probe result for {report}; its log:\n{done.stderr[-3000:]}"
        )
    result = json.loads(html.unescape(found.group(1)))
    result["errors"] += [line.strip() for line in done.stderr.splitlines() if _CONSOLE.search(line)]
    images = result["images"]
    result["ok"] = (
        not result["errors"]
        and bool(images)
        and all(i["complete"] and i["width"] > 0 and i["height"] > 0 for i in images)
    )
    return result


def screenshot(
    report: str | os.PathLike,
    png: str | os.PathLike,
    size: tuple[int, int] = (1400, 2000),
    chromium: str | None = None,
    timeout: float = 120,
) -> Path:
    """Save a PNG of the top ``size`` (width, height in CSS pixels) of ``report`` as Chromium renders it."""
    chromium = chromium or find_chromium()
    if chromium is None:
        raise FileNotFoundError("no Chromium found; install it, e.g. apt-get install chromium")
    png = Path(png).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    done = _run(
        chromium,
        [
            f"--screenshot={png}",
            f"--window-size={size[0]},{size[1]}",
            "--hide-scrollbars",
            "--virtual-time-budget=10000",
            Path(report).resolve().as_uri(),
        ],
        timeout,
    )
    if not png.is_file():
        raise RuntimeError(f"Chromium (exit {done.returncode}) wrote no screenshot; its log:\n{done.stderr[-3000:]}")
    return png


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("report", help="a run's report.html (maxl visualise RUN writes RUN/report.html)")
    p.add_argument("--screenshot", metavar="PNG", help="also save a screenshot of the page's top")
    p.add_argument("--size", type=int, nargs=2, default=(1400, 2000), metavar=("W", "H"), help="screenshot size")
    args = p.parse_args(argv)
    result = check_report(args.report)
    for image in result["images"]:
        print(f"figure {image['alt']}: {image['width']}x{image['height']} px, complete={image['complete']}")
    for error in result["errors"]:
        print(f"error: {error}")
    print(
        f"{args.report}: {'ok' if result['ok'] else 'FAILED'} ({len(result['images'])} figures, "
        f"{len(result['errors'])} errors)"
    )
    if args.screenshot:
        print(f"wrote {screenshot(args.report, args.screenshot, tuple(args.size))}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
