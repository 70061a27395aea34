"""run_benchmark: report contract, determinism, progress, cancellation, artifacts, errors."""

import copy
import io
import json
from pathlib import Path

import pytest

from inference.engine import BenchmarkCancelled, BenchmarkConfig, Sample, run_benchmark
from inference.engine.cli_progress import TextProgressBar
from inference.engine.data import ImageLoadError, split_validation_test

CFG = dict(image_size=64, pretrained=False, n_features=20, batch_size=4, device="cpu")
TECHS = ("iou_curve", "f1", "roc", "normal_fpr", "normal_max")
METRIC_KEYS = {"threshold", "iou", "mean_image_iou", "dice", "precision", "recall", "fpr", "image_accuracy"}


@pytest.fixture(scope="module")
def padim_run(synthetic, tmp_path_factory):
    train, test = synthetic
    calls = []
    art = tmp_path_factory.mktemp("artifacts")
    report = run_benchmark(train, test, BenchmarkConfig(**CFG), progress=lambda s, f: calls.append((s, f)),
                           artifacts_dir=art)
    return report, calls, art


def test_report_contract(padim_run, synthetic):
    report, _, _ = padim_run
    json.dumps(report)  # JSON-serialisable
    for key in ("config", "threshold_free", "test_threshold_free", "inference", "by_category", "by_background",
                "by_defect_type", "split", "per_image", "timing", "peak_memory_mb", "model_memory_mb", "device",
                "recommended_technique"):
        assert key in report, key
    for part in ("threshold_free", "test_threshold_free"):
        assert set(report[part]) == {"image_auroc", "pixel_auroc", "aupro"}
        assert all(0.0 <= v <= 1.0 for v in report[part].values())
    assert set(report["inference"]) == set(TECHS)
    for m in report["inference"].values():
        assert METRIC_KEYS <= set(m)
    assert set(report["timing"]) >= {"fit_seconds", "inference_ms_per_image", "total_seconds"}
    assert report["recommended_technique"] in TECHS
    assert report["device"] == "cpu" and report["model_memory_mb"] > 0 and report["peak_memory_mb"] > 0
    assert set(report["by_defect_type"]) == {"spot", "bar"}
    assert set(report["by_category"]) == {"structural", "surface"}
    assert set(report["by_background"]) == {"True", "False"}
    for sub in report["by_defect_type"].values():
        assert {"threshold_free", "inference", "n_images"} <= set(sub)
        assert sub["threshold_free"]["image_auroc"] is not None  # good images included
        assert set(sub["inference"]) == set(TECHS)


def test_split_is_stratified_and_reported(padim_run, synthetic):
    report, _, _ = padim_run
    _, test = synthetic
    split = report["split"]
    assert split["validation_counts"] == {"bar": 2, "good": 2, "spot": 2}
    assert split["test_counts"] == {"bar": 2, "good": 2, "spot": 2}
    assert sorted(split["validation"] + split["test"]) == sorted(s.key for s in test)
    assert [p["key"] for p in report["per_image"]] == split["test"]
    assert split_validation_test(test, 0.5, 0) == split_validation_test(test, 0.5, 0)
    assert split_validation_test(test, 0.5, 0) != split_validation_test(test, 0.5, 1)


def test_progress_monotone_and_complete(padim_run):
    _, calls, _ = padim_run
    fractions = [f for _, f in calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and 0.0 <= fractions[0]
    assert {"setup", "fit", "inference", "metrics"} <= {s for s, _ in calls}


def test_artifacts_written(padim_run):
    report, _, art = padim_run
    for name in ("roc", "pr", "pro", "iou_vs_threshold"):
        assert (Path(art) / report["curves"][name]).is_file()
    for entry in report["per_image"]:
        assert (Path(art) / entry["artifacts"]["overlay"]).is_file()
        assert (Path(art) / entry["artifacts"]["mask"]).is_file()
        assert set(entry["iou"]) == set(TECHS)


def _strip(report):
    r = copy.deepcopy(report)
    for k in ("timing", "peak_memory_mb", "peak_rss_mb", "cuda_peak_memory_mb"):
        r.pop(k)
    return r


def test_deterministic_for_fixed_seed(padim_run, synthetic):
    train, test = synthetic
    again = run_benchmark(train, test, BenchmarkConfig(**CFG))
    first = _strip(padim_run[0])
    for e in first["per_image"]:
        e.pop("artifacts")
    first.pop("curves")
    again.pop("curves")
    assert first == _strip(again)


def test_cflow_deterministic_and_batch_independent(synthetic):
    train, test = synthetic
    cfg = BenchmarkConfig(model="cflow", epochs=1, coupling_blocks=2, condition_vector=16, fiber_batch_size=512,
                          layers=(2, 3), **CFG)
    a = run_benchmark(train, test, cfg)
    b = run_benchmark(train, test, BenchmarkConfig(**{**cfg.__dict__, "batch_size": 3}))
    assert a["model_info"]["epochs_run"] == 1
    # batch size changes neither training (cached features) nor any image's map
    for x, y in zip(a["per_image"], b["per_image"]):
        assert x["score"] == pytest.approx(y["score"], rel=1e-5)
    assert _strip(a)["threshold_free"] == _strip(run_benchmark(train, test, cfg))["threshold_free"]


def test_cancellation(synthetic):
    train, test = synthetic
    n = {"calls": 0}

    def cancel():
        n["calls"] += 1
        return n["calls"] > 3

    with pytest.raises(BenchmarkCancelled):
        run_benchmark(train, test, BenchmarkConfig(**CFG), should_cancel=cancel)


def test_technique_without_anomalous_validation_images(synthetic):
    train, test = synthetic
    # one anomalous image only: the stratified split puts it in the test part
    subset = [s for s in test if s.defect_type == "good"] + [s for s in test if s.defect_type == "spot"][:1]
    report = run_benchmark(train, subset, BenchmarkConfig(**CFG))
    for name in ("iou_curve", "f1", "roc"):
        assert "anomalous" in report["inference"][name]["error"]
    for name in ("normal_fpr", "normal_max"):
        assert report["inference"][name]["iou"] is not None
    assert report["recommended_technique"] in ("normal_fpr", "normal_max")


def test_corrupt_image_named_in_error(synthetic, tmp_path):
    train, test = synthetic
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ImageLoadError, match="broken.png"):
        run_benchmark(train + [Sample(str(bad), None, "good", key="bad")], test, BenchmarkConfig(**CFG))


def test_invalid_inputs(synthetic):
    train, test = synthetic
    with pytest.raises(ValueError, match="defect-free"):
        run_benchmark(test, test, BenchmarkConfig(**CFG))
    with pytest.raises(ValueError, match="unknown threshold"):
        run_benchmark(train, test, BenchmarkConfig(techniques=("otsu",), **CFG))


def test_text_progress_bar_redraws_one_line_on_a_terminal():
    out = io.StringIO()
    bar = TextProgressBar(width=10, stream=out, min_interval=0, interactive=True)
    bar("fit", 0.5)
    bar("done", 1.0)
    text = out.getvalue()
    assert "\r[#####.....]  50.0% fit" in text and "100.0%" in text and text.endswith("\n")
    assert text.count("\n") == 1


def test_text_progress_bar_writes_whole_lines_elsewhere():
    out = io.StringIO()  # not a terminal, like a CI log
    bar = TextProgressBar(width=10, stream=out)
    for k in range(101):
        bar("fit", k / 200, f"{k}/200 images")
    bar("inference", 0.7)
    bar("done", 1.0)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines[0] == "[..........]   0.0% fit 0/200 images"
    assert len(lines) == 6 + 2  # fit at 0 %, 10 %, ..., 50 %, then one per new stage
    assert lines[-1].startswith("[##########] 100.0% done")


def test_breakdown_of_a_subset_wholly_in_the_validation_part():
    """A category whose only image fell in the validation part still gets whole-folder numbers."""
    import numpy as np

    from inference.engine.runner import _breakdowns
    from inference.engine.types import Sample

    def sample(key, defect_type, category=None):
        return Sample(image_path=key, mask_path=None if defect_type == "good" else key + "_mask",
                      defect_type=defect_type, category=category, background=True, key=key)

    test = [sample("g0", "good"), sample("g1", "good"), sample("s0", "hole", "structural"),
            sample("s1", "hole", "structural"), sample("c0", "mixed", "combined")]
    labels = np.array([False, False, True, True, True])
    masks = np.zeros((5, 8, 8), dtype=bool)
    masks[2:, 2:5, 2:5] = True
    maps = np.random.default_rng(0).random((5, 8, 8)).astype(np.float32) + 2 * masks
    by_type, by_cat, by_bg = _breakdowns(test, [0, 2], maps, masks, labels, {"f1": 1.5})

    assert by_cat["structural"]["n_images"] == 2 and set(by_cat["structural"]["inference"]) == {"f1"}
    combined = by_cat["combined"]
    assert combined["n_images"] == 0 and combined["inference"] == {}
    assert combined["note"] == "all 1 anomalous image(s) of this subset are in the validation part"
    assert combined["whole_folder_threshold_free"]["image_auroc"] == 1.0  # c0 against g0 and g1
    assert set(by_type) == {"hole", "mixed"} and set(by_bg) == {"True"}
