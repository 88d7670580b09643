"""``maxl visualise`` and ``maxl compare``: figures and reports of trained runs."""

from __future__ import annotations

import argparse

import torch

__all__ = ["add_analysis_commands", "run_visualise", "run_compare", "ANALYSIS_COMMANDS"]


def add_analysis_commands(sub) -> None:
    """The subcommands ``visualise`` (alias ``visualize``) and ``compare`` (see :mod:`maxl.analysis.visualise`)."""
    v = sub.add_parser(
        "visualise",
        aliases=["visualize"],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="figures, agreement with human labels and RUN_DIR/report.html of a trained run",
    )
    v.add_argument("run_dir", help="run folder written by `maxl train`")
    v.add_argument(
        "--against", default=None, help="a second run on the same test set (e.g. OUT/single), drawn beside RUN_DIR"
    )
    v.add_argument("--out", default=None, help="folder for figures/ and report.html (default: RUN_DIR)")
    v.add_argument("--top-k", type=int, default=8, help="test images per auxiliary class in the top-k grids")
    v.add_argument(
        "--embedding",
        choices=("tsne", "umap"),
        default="tsne",
        help="2-D embedding: scikit-learn t-SNE, or UMAP (needs umap-learn)",
    )
    v.add_argument("--max-points", type=int, default=2000, help="test images in the embeddings (random subset)")
    v.add_argument(
        "--embed-classes",
        type=int,
        default=2,
        help="the first N primary classes get their own embedding by auxiliary label",
    )
    v.add_argument("--data-root", default=None, help="where the data set lies, if it moved since training")
    v.add_argument("--device", default="cpu", help="cpu, cuda, ...")
    v.add_argument("--seed", type=int, default=0, help="seed of the subset and the embeddings")
    v.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads of torch and of the embedding (default: the libraries' own); "
        "1 is much faster on a machine shared with other jobs",
    )
    c = sub.add_parser(
        "compare",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="training curves of several runs on one figure",
    )
    c.add_argument("run_dirs", nargs="+", help="run folders written by `maxl train`")
    c.add_argument("--out", default="compare.png", help="PNG to write")


def run_visualise(args: argparse.Namespace) -> dict:
    from maxl.analysis.visualise import visualise_run  # matplotlib and scikit-learn's manifold: only when needed

    threads = torch.get_num_threads()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        result = visualise_run(
            args.run_dir,
            against=args.against,
            out_dir=args.out,
            top_k=args.top_k,
            embedding=args.embedding,
            max_points=args.max_points,
            embed_classes=args.embed_classes,
            data_root=args.data_root,
            device=args.device,
            seed=args.seed,
            threads=args.threads,
        )
    finally:
        torch.set_num_threads(threads)
    if result["agreement"] is not None:
        mean = result["agreement"]["mean"]
        print(
            f"generated vs human auxiliary labels within primary classes (test set): NMI {mean['nmi']:.3f}  "
            f"ARI {mean['ari']:.3f}  purity {mean['purity']:.3f} (chance {mean['chance_purity']:.3f})"
        )
    for path in result["figures"]:
        print(f"wrote {path}")
    print(f"wrote {result['report']}")
    return result


def run_compare(args: argparse.Namespace):
    from maxl.analysis.visualise import compare_runs, weights_png

    path, rows = compare_runs(args.run_dirs, args.out)
    print(f"{'run':<40} {'epochs':>6} {'final test acc':>15} {'best':>8} {'last-5 mean':>12}")
    for r in rows:
        print(
            f"{r['run']:<40} {r['epochs']:>6} {r['final_test_acc']:>15.4f} {r['best_test_acc']:>8.4f} "
            f"{r['last5_mean_test_acc']:>12.4f}"
        )
    print(f"wrote {path}")
    weights = weights_png(path)
    if weights.exists() and weights.stat().st_mtime >= path.stat().st_mtime:  # drawn by this call
        print(f"wrote {weights}")
    return path, rows


ANALYSIS_COMMANDS = {"visualise": run_visualise, "visualize": run_visualise, "compare": run_compare}
