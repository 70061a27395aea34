"""``manage.py benchmark``: a dataset folder straight from disk, no database."""
import json
import os
import signal

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError

from annotator.services.demo import generate_demo_dataset
from inference.management.commands import benchmark as command_module

CATEGORIES = {"structural", "surface", "contamination", "combined"}


@pytest.fixture
def demo_folder(tmp_path):
    return generate_demo_dataset(tmp_path / "demo")


def test_cli_on_demo_folder_writes_report(demo_folder, tmp_path, capsys):
    out = tmp_path / "out" / "report.json"
    artifacts = tmp_path / "artifacts"
    call_command(
        "benchmark", "--data-root", str(demo_folder), "--product", "widget", "--model", "padim",
        "--image-size", "64", "--seed", "0", "--labels", str(demo_folder / "labels.csv"),
        "--output", str(out), "--artifacts", str(artifacts),
    )
    report = json.loads(out.read_text())
    import jsonschema

    from inference.engine.report import json_schema

    jsonschema.validate(report, json_schema())
    assert report["config"]["model"] == "padim" and report["config"]["image_size"] == 64
    # --threads defaults to the cores a worker of concurrency 1 would use
    assert report["config"]["num_threads"] == settings.BENCHMARK_THREADS == report["threads"]
    assert report["source"]["product"] == "widget"
    assert set(report["breakdowns"]["by_category"]) == CATEGORIES  # the CSV's labels reached the engine
    assert set(report["breakdowns"]["by_background"]) == {"True"}
    assert 0.5 < report["whole_folder"]["image_auroc"] <= 1.0
    assert any((artifacts / "images").glob("*_overlay.png")) and (artifacts / "curves" / "few_shot.png").is_file()
    captured = capsys.readouterr()
    assert "100.0%" in captured.err and "Wrote" in captured.out  # progress bar on stderr
    # what a person reads: the numbers with intervals and how the technique was chosen
    assert "Test part (95 % intervals): image AUROC" in captured.out
    assert f"Technique chosen by cross-fitting ({report['selection']['method']}): {report['selection']['chosen']}" in captured.out
    # what an inspector counts at each threshold; AUPIMO says why it is missing on 64-pixel images
    regions = report["techniques"][report["selection"]["chosen"]]["regions"]
    assert f"defect regions found {regions['found']}/{regions['defect_regions']}, false alarms per good image" in captured.out
    assert "AUPIMO not reported: needs at least 100,000 defect-free pixels" in captured.out
    # and per defect-size class, for the chosen technique
    for c in regions["by_size"]:
        if c["regions"]:
            assert f"{c['size_class']} {c['detected']}/{c['regions']} " in captured.out


def test_cli_ctrl_c_cancels_cleanly(demo_folder, tmp_path, monkeypatch):
    def interrupting_bar():
        sent = []

        def progress(stage, fraction):
            if not sent:
                sent.append(True)
                os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C does
        return progress

    monkeypatch.setattr(command_module, "progress_bar", interrupting_bar)
    out = tmp_path / "report.json"
    with pytest.raises(CommandError, match="Cancelled"):
        call_command("benchmark", "--data-root", str(demo_folder), "--product", "fabric", "--model", "padim",
                     "--image-size", "64", "--output", str(out))
    assert not out.exists()
    assert signal.getsignal(signal.SIGINT) is not None  # handler restored


def test_cli_errors(demo_folder, tmp_path):
    with pytest.raises(CommandError, match="No images of product 'bottle'"):
        call_command("benchmark", "--data-root", str(demo_folder), "--product", "bottle", "--model", "padim",
                     "--output", str(tmp_path / "r.json"))
    bad = tmp_path / "bad.csv"
    bad.write_text("image_path,background,defect_category\ndemo/widget/test/stain/000.png,yes,dent\n")
    with pytest.raises(CommandError, match="unknown defect category 'dent'"):
        call_command("benchmark", "--data-root", str(demo_folder), "--product", "widget", "--model", "padim",
                     "--labels", str(bad), "--output", str(tmp_path / "r.json"))
    with pytest.raises(CommandError, match="--repeats must lie between 1 and 20"):
        call_command("benchmark", "--data-root", str(demo_folder), "--product", "widget", "--model", "padim",
                     "--repeats", "0", "--output", str(tmp_path / "r.json"))
    assert not (tmp_path / "r.json").exists()


@pytest.mark.real_data
def test_cli_real_bottle_padim(real_bottle_root, real_labels_csv, tmp_path):
    out = tmp_path / "bottle.json"
    call_command(
        "benchmark", "--data-root", str(real_bottle_root.parent), "--product", "bottle", "--model", "padim",
        "--image-size", "256", "--labels", str(real_labels_csv), "--output", str(out),
    )
    report = json.loads(out.read_text())
    by_category = report["breakdowns"]["by_category"]
    assert {"structural", "contamination", "combined"} <= set(by_category)
    # The single "combined" image (broken_small/001.png) lands in the validation part with seed 0:
    # no test-part metrics for it, but whole-folder threshold-free ones.
    combined = by_category["combined"]
    assert combined["whole_folder"]["image_auroc"] >= 0.9
    assert combined["n_anomalous_test"] == 0 and "validation part" in combined["note"]
    assert report["whole_folder"]["image_auroc"] >= 0.99
    assert report["n_train"] == 209 and report["n_test"] == 83


@pytest.mark.real_data
def test_cli_real_kolektorsdd_padim(real_kolektor_root, tmp_path, capsys):
    """KolektorSDD as distributed (grayscale JPEG of varying height, palette BMP masks beside the
    images, no split, a copied folder): the CLI decides like an import and PaDiM runs."""
    out = tmp_path / "kolektor.json"
    call_command(
        "benchmark", "--data-root", str(real_kolektor_root), "--product", "kolektorsdd", "--model", "padim",
        "--output", str(out), "--no-progress",
    )
    err = capsys.readouterr().err
    assert "kolektorsdd: 112 train, 28 good test, 20 anomalous test" in err
    assert "duplicate left out: kos13/kos08/Part0.jpg (same content as kos08/Part0.jpg)" in err
    report = json.loads(out.read_text())
    assert report["n_train"] == 112 and report["n_test"] == 48
    # Measured 0.76 image / 0.92 pixel AUROC on the whole test folder: far above chance.
    assert report["whole_folder"]["image_auroc"] >= 0.65
    assert report["whole_folder"]["pixel_auroc"] >= 0.85


def test_cli_one_label_csv_per_annotator_weighs_their_disagreements(demo_folder, tmp_path, capsys):
    """--labels twice: images the two annotators label alike count with that label; the 5 they
    disagree on have none, and the breakdowns also come weighted by their votes."""
    first = demo_folder / "labels.csv"
    lines = first.read_text().splitlines()
    second = tmp_path / "second-annotator.csv"
    changed = [line.replace(",yes,contamination", ",yes,surface") if "widget/test/stain/" in line
               else line.replace("widget/test/scratch/000.png,yes,", "widget/test/scratch/000.png,no,")
               for line in lines]
    second.write_text("\n".join(changed) + "\n")
    out = tmp_path / "report.json"
    call_command("benchmark", "--data-root", str(demo_folder), "--product", "widget", "--model", "padim",
                 "--image-size", "64", "--pretrained", "false", "--techniques", "iou_curve,f1",
                 "--labels", str(first), "--labels", str(second), "--output", str(out), "--no-progress")
    captured = capsys.readouterr()
    assert "(11 labelled from labels.csv, second-annotator.csv; the annotators disagree on 5)" in captured.err
    report = json.loads(out.read_text())
    chosen = report["selection"]["chosen"]
    surface = report["breakdowns"]["by_category"]["surface"]
    weights = {}  # by hand: scratch 001-003 agreed surface; scratch 000 surface by both (background split); stains half
    for entry in report["per_image"]:
        if "/scratch/" in entry["key"]:
            weights[entry["key"]] = 1.0
        elif "/stain/" in entry["key"]:
            weights[entry["key"]] = 0.5
    tp = sum(w * next(e for e in report["per_image"] if e["key"] == k)["counts"][chosen][0] for k, w in weights.items())
    total = sum(w * sum(next(e for e in report["per_image"] if e["key"] == k)["counts"][chosen])
                for k, w in weights.items())
    lu = surface["label_uncertainty"]
    assert lu["weighted"][chosen]["iou"] == pytest.approx(tp / total, rel=1e-12)
    assert lu["n_disputed"] == sum(1 for k in weights if "/stain/" in k or k.endswith("scratch/000.png"))
    # the final label leaves the disputed scratch out (no final label while they disagree)
    assert surface["n_anomalous_test"] == sum(1 for k in weights if "/scratch/" in k and not k.endswith("000.png"))
    assert "Where annotators disagreed (test IoU per subset, final labels vs weighted by their votes):" in captured.out
    line = next(line for line in captured.out.splitlines() if line.startswith(f"  surface: {chosen} IoU"))
    assert f"{lu['weighted'][chosen]['iou']:.3f} weighted by votes ({lu['n_disputed']} disputed)" in line
    assert line.endswith("DEPENDS ON DISPUTED LABELS") == lu["depends_on_disputed_labels"]
