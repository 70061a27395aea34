"""``benchmark --save-model`` then ``manage.py inspect``: the package scores images as the run did."""
import csv

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from annotator.services.demo import generate_demo_dataset


def test_saved_model_inspects_like_the_report_and_refuses_another_size(tmp_path, capsys):
    import json

    demo = generate_demo_dataset(tmp_path / "demo")
    package = tmp_path / "model"
    call_command("benchmark", "--data-root", str(demo), "--product", "widget", "--model", "padim",
                 "--image-size", "64", "--techniques", "iou_curve,normal_max", "--output", str(tmp_path / "r.json"),
                 "--save-model", str(package), "--no-progress")
    assert "Saved the fitted model" in capsys.readouterr().out
    report = json.loads((tmp_path / "r.json").read_text())
    entries = report["per_image"]
    images = [str(demo / e["key"]) for e in entries]
    out = tmp_path / "results.csv"
    call_command("inspect", str(package), *images, "--output", str(out), "--maps", str(tmp_path / "maps"))
    rows = list(csv.DictReader(out.open()))
    assert [r["image"] for r in rows] == images
    for row, entry in zip(rows, entries):
        assert float(row["score"]) == pytest.approx(entry["score"], rel=1e-5)
        assert (row["verdict"] == "defective") == entry["predicted_anomalous"]
        assert row["technique"] == report["selection"]["chosen"]
    assert len(list((tmp_path / "maps").glob("*_map.npy"))) == len(images)
    assert "defective" in capsys.readouterr().err

    with pytest.raises(CommandError, match="fitted on 64 px images; it cannot inspect at 128 px"):
        call_command("inspect", str(package), images[0], "--image-size", "128")
    with pytest.raises(CommandError, match="not a model package"):
        call_command("inspect", str(tmp_path), images[0])

    onnx_file = tmp_path / "model.onnx"
    call_command("export_model", str(package), "--format", "onnx", "--output", str(onnx_file))
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(onnx_file)).metadata_props}
    assert float(meta["defectbench.image_threshold"]) == report["image_decision"]["threshold"]
