"""One self-contained HTML page per run: config, summary, metrics table, agreement scores,
label-usage warnings and every figure, the PNGs embedded as base64 data URIs, so the page
can be shared as one file.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

__all__ = ["render_report", "write_report"]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.85em; } td, th { padding: 2px 8px; text-align: right; }
th { background: #f0f0f0; position: sticky; top: 0; } tr:nth-child(even) td { background: #fafafa; }
.scroll { max-height: 28em; overflow: auto; display: inline-block; border: 1px solid #ddd; }
pre { background: #f7f7f7; padding: 1em; font-size: 0.8em; overflow: auto; }
figure { margin: 1.5em 0; } figcaption { font-size: 0.9em; color: #444; margin-bottom: 0.4em; }
img { max-width: 100%; border: 1px solid #eee; } .warn { color: #a40; }
"""


def _cell(value) -> str:
    if isinstance(value, bool) or value is None:
        return html.escape(str(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return html.escape(str(value))


def _table(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    if not rows:
        return "<p>(none)</p>"
    if columns is None:  # scalar columns in first-seen order; lists (label_counts, ...) are left out
        columns = []
        for row in rows:
            columns += [k for k, v in row.items() if k not in columns and not isinstance(v, (list, dict))]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_cell(row.get(c, ''))}</td>" for c in columns) + "</tr>" for row in rows)
    return f'<div class="scroll"><table><tr>{head}</tr>{body}</table></div>'


def render_report(
    title: str,
    config: dict,
    metrics: Sequence[dict],
    figures: Sequence[tuple[str, Path]],
    summary: dict | None = None,
    agreement: Sequence[dict] | None = None,
    warnings: Sequence[str] = (),
    remarks: Sequence[str] = (),
) -> str:
    """The report as an HTML string.

    Args:
        title: page title.
        config: the run's ``config.json``.
        metrics: the run's ``metrics.jsonl`` records (scalar fields become the table's columns).
        figures: ``(caption, PNG path)`` pairs, embedded in this order.
        summary: the run's ``summary.json``.
        agreement: rows of the agreement table (one dict per primary class and a mean row).
        warnings: shown near the top, highlighted (e.g. the label-usage warnings of training).
        remarks: plain lines shown under the title (e.g. the data set and hierarchy).

    Returns:
        A complete HTML document with no external references.
    """
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
    ]
    if remarks:
        parts.append("<p>" + "<br>".join(html.escape(r) for r in remarks) + "</p>")
    if warnings:
        parts.append("<ul>" + "".join(f'<li class="warn">{html.escape(w)}</li>' for w in warnings) + "</ul>")
    if summary:
        parts.append("<h2>Summary</h2>" + _table([summary]))
    if agreement:
        parts.append(
            "<h2>Generated vs human auxiliary labels (test set, within each primary class)</h2>" + _table(agreement)
        )
    parts.append("<h2>Figures</h2>")
    for caption, path in figures:
        data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
        name = html.escape(Path(path).name)
        parts.append(
            f'<figure id="{name}"><figcaption><b>{name}</b>: {html.escape(caption)}</figcaption>'
            f'<img alt="{name}" src="data:image/png;base64,{data}"></figure>'
        )
    parts.append("<h2>Metrics per epoch</h2>" + _table(metrics))
    parts.append("<h2>Configuration</h2><pre>" + html.escape(json.dumps(config, indent=2)) + "</pre>")
    parts.append("</body></html>\n")
    return "".join(parts)


def write_report(path: str | os.PathLike, *args, **kwargs) -> Path:
    """:func:`render_report` written to ``path`` atomically. Returns the path."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(render_report(*args, **kwargs), encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
