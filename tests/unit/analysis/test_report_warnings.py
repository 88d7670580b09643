"""The report shows each kind of label-usage warning once, with the epochs it was given in."""

from maxl.analysis.visualise import summarise_label_warnings


def test_one_line_per_kind_with_the_latest_message_and_its_epochs():
    metrics = [
        {"epoch": e, "label_warnings": [f"epoch {e}: generator collapsed: only {40 + e}% used"]} for e in range(6, 11)
    ]
    metrics[2]["label_warnings"].append("epoch 8: labels uniform: sharpness 0.01")
    metrics.append({"epoch": 11})
    lines = summarise_label_warnings(metrics)
    assert lines == [
        "epoch 10: generator collapsed: only 50% used (given in 5 epochs, 6 to 10)",
        "epoch 8: labels uniform: sharpness 0.01",
    ]
    assert summarise_label_warnings([{"epoch": 1}]) == []
