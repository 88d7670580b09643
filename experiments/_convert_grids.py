"""One-off (issue 24, part 4): write the grids of experiments/harness.py, the variants of
experiments/generated_labels.py and experiments/meta_variants.py as TOML grid files in maxl/grids/.

    python -m experiments._convert_grids

Every `maxl train` flag tuple is parsed by the command line's own parser into dotted settings,
written as TOML dotted keys. tests/unit/train/test_grid_conversion.py checks that every run of
every grid and variant resolves to the same RunConfig as the old argv form.
"""

from __future__ import annotations

import re
from pathlib import Path

from experiments import generated_labels, harness, meta_variants
from maxl.cli import commands as cli

OUT = Path(__file__).resolve().parent.parent / "maxl" / "grids"


SECTIONS = ("train.method", "preset", "data.", "model.", "train.", "train.meta.", "aux.", "baselines.")


def _order(key: str) -> int:
    return SECTIONS.index(max((s for s in SECTIONS if key.startswith(s)), key=len))


def settings(flags) -> dict:
    """Dotted settings of `maxl train` flags, as the command line parses them (by section)."""
    parsed = {k: v for k, v in vars(cli.build_parser().parse_args(["train", *flags])).items() if k != "command"}
    if "train.method" in parsed:
        [parsed["train.method"]] = parsed["train.method"]
    return dict(sorted(parsed.items(), key=lambda kv: _order(kv[0])))


def value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(value(x) for x in v) + "]"
    raise TypeError(v)


def wrap(key: str, text: str) -> list[str]:
    """``key = "text"`` as a multi-line basic string where long."""
    if len(text) < 90:
        return [f"{key} = {value(text)}"]
    words, lines, line = text.split(" "), [], ""
    for w in words:
        if line and len(line) + len(w) + 1 > 100:
            lines.append(line + " \\")
            line = w
        else:
            line = f"{line} {w}" if line else w
    lines.append(line + '"""')
    return [f'{key} = """\\', *lines]


def table(header: str, dotted: dict) -> list[str]:
    return [f"[{header}]", *(f"{k} = {value(v)}" for k, v in dotted.items())]


def variant_comments(module) -> dict[str, list[str]]:
    """The comment lines above each entry of a module's VARIANTS (and one on its line)."""
    lines = Path(module.__file__).read_text().splitlines()
    out, pending = {}, []
    inside = False
    for line in lines:
        if line.startswith("VARIANTS"):
            inside = True
            continue
        if not inside:
            continue
        if line.startswith("}"):
            break
        stripped = line.strip()
        if stripped.startswith("#"):
            pending.append(stripped)
            continue
        m = re.match(r'\s*"([\w-]+)": \(', line)
        if m:
            tail = re.search(r"\)\),?\s*(#.*)$", line)
            out[m.group(1)] = pending + ([tail.group(1)] if tail else [])
            pending = []
    return out


def variants(module) -> list[str]:
    comments = variant_comments(module)
    lines = []
    for name, (method, flags) in module.VARIANTS.items():
        lines += ["", *comments.get(name, []), *table(f"variants.{name}", settings(["--method", method, *flags]))]
    return lines


def header(grid, includes=(), with_methods=True) -> list[str]:
    lines = wrap("description", grid.description)
    if includes:
        lines.append(f"include = {value(list(includes))}")
    if with_methods:
        lines.append(f"methods = {value(list(grid.methods))}")
    lines.append(f"seeds = {value(list(grid.seeds))}")
    return lines


def base_settings(grid, drop=()) -> dict:
    argv = ["--dataset", grid.dataset, *(["--hierarchy", grid.hierarchy] if grid.hierarchy else []),
            *(["--data-root", grid.data_root] if grid.data_root else []), *grid.train_args]
    s = settings(argv)
    return {k: v for k, v in s.items() if k not in drop}


def write(name: str, lines: list[str]) -> None:
    (OUT / f"{name}.toml").write_text("\n".join(lines).rstrip() + "\n")
    print(f"wrote {OUT / name}.toml")


def main() -> None:
    OUT.mkdir(exist_ok=True)
    head = "# converted from experiments/harness.py (issue 24, part 4)"
    cpu = settings(("--backbone", "tiny-cnn", "--train-subset", "3000", "--test-subset", "2000", *harness._CPU_OPTIMISER))
    write("_cpu", ["# the CPU-sized settings of the mnist and cifar10-animal-vehicle grids (included by them)",
                   "# Settings sized for 2 CPU cores: 5 methods x 3 seeds took 26 (MNIST) and 50 (CIFAR-10) minutes on",
                   "# 2 cores shared with three other jobs, with --threads 1. Chosen on MNIST (seed 0, 10 epochs): lr 0.01",
                   "# with momentum 0.9 at a constant rate ended at 86 % (single) with the test accuracy dropping by 5",
                   "# (single) to 10 (random) points from one epoch to the next; halved every 3 epochs it was smooth but",
                   "# slow (79 %); lr 0.03 halved every 3 epochs (the paper's halving every 50 of 200 epochs, compressed)",
                   "# reached 89 % smoothly.",
                   *wrap("note", harness._CPU_NOTE), "", "[base]", 'preset = "paper"',
                   *(f"{k} = {value(v)}" for k, v in cpu.items())])
    protocol = settings(harness._protocol(15))
    write("_protocol", ["# the generated-labels protocol (issue 13), included by the protocol-* grids: a CPU-sized",
                        "# setting in which the human hierarchy helps beyond the seed noise, with a validation split",
                        "# carved from the training images for every choice (the test set only for the final table)",
                        *wrap("note", harness._protocol_note(15)), "seeds = [0, 1, 2, 3, 4]", "", "[base]",
                        'preset = "paper"', *(f"{k} = {value(v)}" for k, v in protocol.items())])
    write("_generated-labels", [
        "# the MAXL variants of issue 13 (experiments/generated_labels.py ablation), included by the",
        "# protocol-* grids: `maxl grid protocol-cifar10 --variants ps-adam-mi ...`; each sets its method",
        *variants(generated_labels)])
    for name, grid in harness.CONFIGS.items():
        if name.startswith("protocol-"):
            s = {k: v for k, v in base_settings(grid).items() if k not in protocol or protocol[k] != v}
            hierarchy = s.pop("data.hierarchy")
            if hierarchy.endswith(".toml"):
                hierarchy = f"hierarchies/{Path(hierarchy).name}"
            s = {"data.dataset": s.pop("data.dataset"), "data.hierarchy": hierarchy, **s}
            description = grid.description.replace("experiments/hierarchies/", "maxl/grids/hierarchies/")
            grid = harness.GridConfig(**{**grid.__dict__, "description": description})
            note = [] if grid.note == harness._protocol_note(15) else wrap("note", grid.note)
            write(name, [head, *header(grid, ["_protocol", "_generated-labels"]), *note, "", "[base]",
                         *(f"{k} = {value(v)}" for k, v in s.items())])
        elif grid.note == harness._CPU_NOTE:
            s = {k: v for k, v in base_settings(grid).items() if k not in cpu}
            extra = []
            if name == meta_variants.GRID:
                extra = ["", "# the meta step's variants of experiments/meta_variants.py: "
                             "`maxl grid mnist --variants single maxl maxl-fused-jvp maxl-every4`",
                         *variants(meta_variants)]
            write(name, [head, *header(grid, ["_cpu"]), "", "[base]", *(f"{k} = {value(v)}" for k, v in s.items()),
                         *extra])
        else:
            write(name, [head, *header(grid), *wrap("note", grid.note), "", "[base]", 'preset = "paper"',
                         *(f"{k} = {value(v)}" for k, v in base_settings(grid).items())])


if __name__ == "__main__":
    main()
