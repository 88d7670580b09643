"""RunConfig: sections, round trips through dicts, TOML and config.json; the CLI's flags."""

import json

import pytest

from maxl.cli.commands import build_parser, main, run_configs
from maxl.train.build import RunConfig, parse_psi
from maxl.train.config import RESUMABLE_CHANGES


def parse(*argv):
    return run_configs(build_parser().parse_args(["train", *argv]))


def test_defaults_are_the_papers_settings_and_alpha_follows_the_lr():
    run = RunConfig()
    assert (run.train.lr, run.train.batch_size, run.train.epochs, run.generator.lr) == (0.01, 100, 200, 1e-3)
    assert run.meta.inner_lr is None  # resolved to the lr by the builder
    assert RunConfig.from_dict(run.to_dict()) == run


def test_flags_set_exactly_their_settings_and_several_methods_get_their_folders():
    runs, resume = parse(
        "--method",
        "single",
        "maxl",
        "--lr",
        "0.05",
        "--inner-lr",
        "0.2",
        "--no-augment",
        "--aux",
        "rotation",
        "--aux-weight",
        "rotation=0.5",
        "--out",
        "o",
        "--preset",
        "paper",
    )
    assert not resume and [r.train.method for r in runs] == ["single", "maxl"]
    assert [r.out for r in runs] == ["o/single", "o/maxl"]
    run = runs[1]
    assert run.train.lr == 0.05 and run.meta.inner_lr == 0.2 and run.data.augment is False
    assert run.aux.tasks == ["rotation"] and run.aux.weights == {"rotation": 0.5}
    untouched = RunConfig().to_dict()
    for section in ("model", "baselines"):
        assert run.to_dict()[section] == untouched[section]


def test_a_toml_file_and_a_runs_config_json_rerun_with_flags_on_top(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text(
        'out = "x"\n[data]\ndataset = "digits"\ntrain_subset = 64\n[train]\nepochs = 3\nlr = 0.05\n'
        "[objective]\nentropy_weight = 0.5\n"
    )
    [run], _ = parse("--config", str(toml), "--epochs", "4")
    assert (run.data.train_subset, run.train.lr, run.train.epochs, run.objective.entropy_weight, run.out) == (
        64,
        0.05,
        4,
        0.5,
        "x",
    )
    config_json = tmp_path / "config.json"
    config_json.write_text(
        json.dumps(
            {
                **run.to_dict(),
                "data": {**run.to_dict()["data"], "name": "digits", "num_train": 64, "num_test": 10},
                "labels": None,
                "env": {"command": "maxl train"},
            }
        )
    )
    [again], _ = parse("--config", str(config_json))
    assert again == run


def test_bad_settings_name_themselves(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nlearning_rate = 0.1\n")
    with pytest.raises(ValueError, match=r"unknown settings \['learning_rate'\] in section \[train\]"):
        parse("--config", str(bad))
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        RunConfig.from_dict({"data": {"dataset": "imagenet"}})
    with pytest.raises(ValueError, match="cannot be combined with --weighting dwa"):
        parse("--weighting", "dwa", "--aux-weight", "primary=2")
    with pytest.raises(FileNotFoundError, match="no such file"):
        parse("--config", str(tmp_path / "missing.toml"))
    with pytest.raises(ValueError, match="has 3 entries but the data set has 2 primary classes"):
        parse_psi("1,2,3", 2, None)


def test_resumable_settings_name_real_settings():
    tree = RunConfig().to_dict()
    for path in RESUMABLE_CHANGES:
        node = tree
        for key in path.split("."):
            assert key in node, path
            node = node[key]


@pytest.mark.integration
def test_config_json_of_a_run_reruns_it_to_the_same_numbers(tmp_path):
    argv = [
        "train",
        "--dataset",
        "digits",
        "--method",
        "maxl",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--train-subset",
        "96",
        "--test-subset",
        "40",
        "--hidden",
        "16",
        "--lr",
        "0.05",
        "--no-progress",
        "--device",
        "cpu",
    ]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    assert main(["train", "--config", str(tmp_path / "a" / "config.json"), "--out", str(tmp_path / "b")]) == 0
    a, b = ([json.loads(line) for line in (tmp_path / r / "metrics.jsonl").read_text().splitlines()] for r in "ab")
    for ra, rb in zip(a, b):
        assert {k: v for k, v in ra.items() if k != "epoch_time_s"} == {
            k: v for k, v in rb.items() if k != "epoch_time_s"
        }


def test_the_outer_images_of_weight_split_0_are_the_training_images_without_augmentation():
    """With nothing held out the weights' outer batches come from the training images with the test
    set's transform (not augmented, as a held-out split), and the training set keeps every image."""
    import torch

    from maxl.data.datasets import DataBundle, ImageTensorDataset, make_transform
    from maxl.train.build import hold_out_for_weights, training_images_for_weights

    images = torch.randint(0, 256, (12, 3, 8, 8), dtype=torch.uint8)
    labels = torch.arange(12) % 3
    mean, std = (0.5, 0.5, 0.5), (0.2, 0.2, 0.2)
    train = ImageTensorDataset(images, labels, make_transform(8, mean, std, augment=True))
    test = ImageTensorDataset(images[:4], labels[:4], make_transform(8, mean, std, augment=False))
    data = DataBundle(train, test, 3, ["a", "b", "c"], 3, 8, None, None, None, None, "toy")
    assert hold_out_for_weights(data, 0, seed=0) is data  # nothing held out
    outer = training_images_for_weights(data)
    assert torch.equal(outer.images, images) and torch.equal(outer.labels, labels)
    torch.manual_seed(0)
    augmented = [not torch.equal(train[i][0], test.transform(images[i])) for i in range(12)]
    assert any(augmented)  # the training transform crops and flips: the check below can fail
    for i in range(12):
        assert torch.equal(outer[i][0], test.transform(images[i]))
