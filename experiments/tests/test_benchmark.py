"""The benchmark's plumbing on a tiny network (no timing is asserted: only what does not
depend on the machine — that every variant runs, FLOP counts, the written files)."""

import argparse
import json

import pytest

from experiments import benchmark

pytestmark = pytest.mark.integration


def args(tmp_path, **overrides):
    a = benchmark.build_parser().parse_args(
        [
            "--backbones",
            "tiny-cnn",
            "--batch-size",
            "4",
            "--warmup",
            "0",
            "--repeats",
            "1",
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "b"),
        ]
    )
    return argparse.Namespace(**{**vars(a), **overrides})


def test_fused_and_amortised_variants_count_fewer_flops(tmp_path):
    cases = benchmark.make_cases(benchmark.variant_names(4), "tiny-cnn", 4, benchmark.torch.device("cpu"), 4)
    flops = {name: benchmark.count_flops(case) for name, case in cases.items()}
    assert all(f > 0 for f in flops.values()), flops
    # sharing the multi-task forward/backward saves passes, whatever the engine
    assert flops["fused-func"] < flops["maxl-func"]
    assert flops["fused-jvp"] < flops["maxl-jvp"]
    assert flops["fused-first"] < flops["maxl-first"]
    assert flops["maxl-func"] == flops["maxl-higher"]  # the same passes, two implementations
    # a generator step every 4 iterations costs less per iteration than one every iteration
    assert flops["single"] < flops["every4"] < flops["fused-jvp"]


def test_benchmark_writes_json_and_markdown_with_every_variant(tmp_path):
    assert (
        benchmark.main(
            [
                "--backbones",
                "tiny-cnn",
                "--batch-size",
                "4",
                "--warmup",
                "0",
                "--repeats",
                "2",
                "--no-memory",
                "--variants",
                "fused-jvp",
                "every2",
                "--gen-every",
                "2",
                "--device",
                "cpu",
                "--out",
                str(tmp_path / "b"),
            ]
        )
        == 0
    )
    result = json.loads((tmp_path / "b.json").read_text())
    rows = result["backbones"][0]["variants"]
    assert list(rows) == ["single", "fused-jvp", "every2"]
    assert rows["single"]["ratio"] == 1.0 and len(rows["every2"]["times_s"]) == 2
    assert rows["every2"]["target_ratio"] == 2.0 and rows["fused-jvp"]["target_ratio"] == 4.0
    table = (tmp_path / "b.md").read_text()
    for name in rows:
        assert f"| {name} |" in table


def test_memory_is_measured_in_a_fresh_process(tmp_path):
    row = benchmark.measure_memory("single", "tiny-cnn", args(tmp_path))
    assert row["peak_rss_mb"] > row["train_rss_mb"] > 0


def test_unknown_variant_is_rejected(tmp_path):
    with pytest.raises(SystemExit, match="unknown variant 'fused-higher'"):
        benchmark.main(["--backbones", "tiny-cnn", "--variants", "fused-higher", "--out", str(tmp_path / "b")])


def test_projection_of_the_papers_cifar100_run():
    # 50 000 images / batch 100 = 500 iterations per epoch, 200 epochs: 1 s per iteration is 27.8 h
    assert benchmark.projected_hours(1.0, batch_size=100) == pytest.approx(100_000 / 3600)
    assert benchmark.projected_hours(1.0, batch_size=128) == pytest.approx(391 * 200 / 3600)  # last batch partial
    bench = {
        "backbone": "vgg16",
        "batch_size": 100,
        "variants": {"single": {"median_s": 1.0}, "fused-jvp": {"median_s": 4.0}, "maxl-jvp": {"median_s": 5.0}},
    }
    table = "\n".join(benchmark.projection_markdown(bench))
    assert "| single | 27.8 | 1.00× |" in table and "| fused-jvp | 111.1 | 4.00× |" in table
    assert "maxl-jvp" not in table  # one engine of the reference schedule is enough
    assert benchmark.projection_markdown({**bench, "backbone": "small-cnn"}) == []


def test_markdown_is_rendered_again_from_the_saved_json(tmp_path):
    assert (
        benchmark.main(
            [
                "--backbones",
                "tiny-cnn",
                "--batch-size",
                "4",
                "--warmup",
                "0",
                "--repeats",
                "1",
                "--no-memory",
                "--no-flops",
                "--variants",
                "fused-jvp",
                "--device",
                "cpu",
                "--out",
                str(tmp_path / "b"),
            ]
        )
        == 0
    )
    first = (tmp_path / "b.md").read_text()
    (tmp_path / "b.md").unlink()
    assert benchmark.main(["--render", str(tmp_path / "b.json")]) == 0
    assert (tmp_path / "b.md").read_text() == first


def test_compile_refuses_the_double_backward_variants(tmp_path):
    with pytest.raises(SystemExit, match="create_graph=True"):
        benchmark.main(["--backbones", "tiny-cnn", "--compile", "--out", str(tmp_path / "b")])
    with pytest.raises(SystemExit, match=r"\['fused-func'\]"):
        benchmark.main(
            [
                "--backbones",
                "tiny-cnn",
                "--compile",
                "--variants",
                "fused-jvp",
                "fused-func",
                "--out",
                str(tmp_path / "b"),
            ]
        )


@pytest.mark.slow
def test_compiled_backbones_give_the_same_step(tmp_path):
    # torch.compile changes how, not what: one fused step from the same weights, compiled or not
    steps = {}
    for compiled in (False, True):
        case = benchmark.make_cases(["fused-jvp"], "tiny-cnn", 4, benchmark.torch.device("cpu"), 4, compile=compiled)[
            "fused-jvp"
        ]
        case.unit()
        net = case.unit.__defaults__[0].net
        steps[compiled] = benchmark.torch.cat([p.detach().flatten() for p in net.parameters()])
    assert benchmark.torch.allclose(steps[False], steps[True], atol=1e-5)


def test_a_short_step_is_timed_over_several_calls():
    calls = []

    def unit():
        calls.append(1)
        benchmark.time.sleep(0.01)

    cases = {"single": benchmark.Case("single", unit, 1, lambda: None)}
    times = benchmark.time_cases(cases, warmup=0, repeats=2, min_time=0.05)
    assert len(times["single"]) == 2 and len(calls) >= 2 * 5  # ≥ 0.05 s of 0.01 s calls per round
    assert all(0.01 <= t < 0.05 for t in times["single"])  # per call, not per round
    calls.clear()
    benchmark.time_cases(cases, warmup=0, repeats=3, min_time=0.0)
    assert len(calls) == 3


def test_every_remedy_variant_builds_and_takes_a_step():
    import torch

    from experiments.benchmark import REMEDIES, make_cases

    cases = make_cases(list(REMEDIES), "tiny-cnn", 8, torch.device("cpu"), 4)
    for name, case in cases.items():
        generator = case.unit.__defaults__[0].generator
        before = [p.detach().clone() for p in generator.head.parameters()]
        case.unit()
        assert any(not torch.equal(a, b) for a, b in zip(before, generator.head.parameters())), name
    assert cases["fused-implicit-k10-every4"].iterations == 4 and cases["fused-implicit-k3"].iterations == 1
    assert cases["fused-jvp-features-iic-every2"].iterations == 2
    assert {"fused-implicit-k3", "fused-implicit-k10-every4"} <= set(benchmark.DOUBLE_BACKWARD)


def test_gpu_projection_by_hand():
    """100,000 iterations (batch 100, 200 epochs of 50,000): 100 GFLOP at 1 TFLOP/s x 0.5 = 0.2 s
    per iteration; a data path of 1,000 images/s takes 0.1 s per batch: overlapped 0.2 s, serial 0.3 s."""
    bench = {"batch_size": 100, "variants": {"single": {"gflop": 100.0}, "fused-jvp": {"gflop": 400.0}}}
    p = benchmark.gpu_projection(bench, tflops=1.0, efficiency=0.5, data_rates={"slow": 1_000.0, "fast": 1e9})
    assert p["iterations"] == 100_000
    single, maxl = p["variants"]["single"], p["variants"]["fused-jvp"]
    assert single["compute_h"] == pytest.approx(100_000 * 0.2 / 3600)
    assert single["overlapped_h"]["slow"] == pytest.approx(100_000 * 0.2 / 3600)
    assert single["serial_h"]["slow"] == pytest.approx(100_000 * 0.3 / 3600)
    assert maxl["ratio_to_single"]["fast"] == pytest.approx(4.0)  # compute-bound: the FLOP ratio
    slow = benchmark.gpu_projection(bench, tflops=1e3, efficiency=1.0, data_rates={"slow": 1_000.0})
    assert slow["variants"]["fused-jvp"]["ratio_to_single"]["slow"] == pytest.approx(
        1.0
    )  # data-bound hides MAXL's cost


def test_task_weight_variants_take_weight_steps_and_report_the_ratio_to_equal(tmp_path):
    import torch

    from experiments.benchmark import TASK_WEIGHTS, make_cases

    cases = make_cases(list(TASK_WEIGHTS), "cnn3", 4, torch.device("cpu"), 4)
    for name, case in cases.items():
        trainer = case.unit.__defaults__[0]
        variant = TASK_WEIGHTS[name]
        assert case.iterations == variant.every
        before = trainer.learner.weighting.weights()
        generator = [p.detach().clone() for p in trainer.generator.parameters()] if trainer.generator else []
        case.unit()
        weighting = trainer.learner.weighting
        moved = weighting.weights() != before
        if variant.weighting == "ol-aux":  # the horizon (5) holds its first update: one step accumulated
            moved = int(weighting.accumulated_steps) == 1 and float(weighting.accumulated.abs().sum()) > 0
        assert moved == (variant.weighting != "equal"), name
        assert trainer.steps.fused_weights == variant.options.get("fused", False), name
        # MAXL's variants: the generated-labels task (and no other) and a generator step per iteration
        expected = ("primary", "maxl") if variant.method == "maxl" else ("primary", "rotation", "colourisation")
        assert tuple(trainer.learner.task_names) == expected, name
        assert (trainer.generator is not None) == (variant.method == "maxl"), name
        if generator:  # it took its step
            assert all(not torch.equal(p, q) for p, q in zip(generator, trainer.generator.parameters())), name
    variants = ["tw-equal", "tw-auto-lambda", "tw-maxl-equal", "tw-maxl-auto-lambda"]
    a = args(tmp_path, backbones=["cnn3"], variants=variants, min_time=0.0)
    rows = benchmark.benchmark_backbone("cnn3", argparse.Namespace(**{**vars(a), "no_memory": True}), log=lambda *_: 0)
    rows = rows["variants"]
    assert rows["tw-equal"]["ratio_to_equal"] == 1.0 and rows["tw-auto-lambda"]["ratio_to_equal"] > 0
    assert rows["tw-maxl-equal"]["ratio_to_equal"] == 1.0
    assert rows["tw-maxl-auto-lambda"]["equal_variant"] == "tw-maxl-equal"
    assert rows["tw-auto-lambda"]["equal_variant"] == "tw-equal"
    assert "ratio_to_equal" not in rows["single"]


def test_the_title_names_the_ratio_to_equal_weighting_only_for_task_weight_variants():
    def result(variants):
        row = {"description": "d", "median_s": 0.1, "ratio": 1.0, "target_ratio": None}
        bench = {"backbone": "cnn3", "image": [3, 32, 32], "psi": [6, 4], "loadavg_before": [1.0] * 3}
        bench |= {
            "loadavg_after": [1.0] * 3,
            "batch_size": 4,
            "variants": {n: {**row, **v} for n, v in variants.items()},
        }
        env = {"command": "c", "date": "d", "torch": "t", "device": "cpu", "processor": "p", "threads": 1}
        return {"env": env, "batch_size": 4, "warmup": 0, "repeats": 1, "backbones": [bench]}

    plain = benchmark.markdown(result({"single": {}, "fused-jvp": {}}))
    assert plain.startswith("# Cost of a MAXL iteration (ratios to single-task, same process)\n")
    assert "equal weights" not in plain
    weighted = benchmark.markdown(
        result({"single": {}, "tw-maxl-auto-lambda": {"ratio_to_equal": 1.25, "equal_variant": "tw-maxl-equal"}})
    )
    assert weighted.startswith("# Cost of meta-learned task weights (ratios to equal weighting of the same tasks")
    assert "(**1.25× tw-maxl-equal**)" in weighted
    old = benchmark.markdown(
        result({"single": {}, "tw-auto-lambda": {"ratio_to_equal": 1.1}})
    )  # a JSON without the name
    assert "(**1.10× tw-equal**)" in old
