"""Figure of a grid: primary test accuracy against epoch per method, mean over seeds ± 1 std.

    python -m experiments.plot_curves runs/mnist --out figures/mnist-curves.png

Reads only the run folders' config.json / metrics.jsonl / summary.json (via maxl.analysis.results).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from maxl.analysis.results import collect_runs, plot_curves


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("grid", help="output folder of a grid (holds <method>/seed<k>/ run folders)")
    p.add_argument("--out", required=True, help="figure file (.png or .pdf)")
    p.add_argument("--title", default=None, help="title (default: from the grid's grid.json)")
    args = p.parse_args(argv)
    try:
        runs = collect_runs(args.grid)
    except FileNotFoundError as err:
        print(f"plot_curves: error: {err}", file=sys.stderr)
        return 2
    title = args.title
    if title is None:
        grid_file = Path(args.grid) / "grid.json"
        name = json.loads(grid_file.read_text())["grid"]["name"] if grid_file.is_file() else Path(args.grid).name
        c = runs[0].config
        title = (
            f"{name}: {c['data']['name']}, {c['model']['backbone']}, {c['data']['num_train']} train images\n"
            f"test accuracy, mean ± 1 std over seeds"
        )
    print(f"wrote {plot_curves(runs, args.out, title)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
