"""run_benchmark: report contract, determinism, progress, cancellation, artifacts, errors."""

import copy
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from inference.engine import BenchmarkCancelled, BenchmarkConfig, Sample, run_benchmark
from inference.engine.cli_progress import TextProgressBar
from inference.engine.colours import TRUTH_RGB
from inference.engine.data import ImageLoadError, split_validation_test

CFG = dict(image_size=64, pretrained=False, n_features=20, batch_size=4, device="cpu")
TECHS = ("iou_curve", "f1", "roc", "normal_fpr", "normal_fpr_1e4", "normal_sigma", "normal_max", "synthetic")


@pytest.fixture(scope="module")
def padim_run(synthetic, tmp_path_factory):
    train, test = synthetic
    calls = []
    art = tmp_path_factory.mktemp("artifacts")
    report = run_benchmark(train, test, BenchmarkConfig(**CFG), progress=lambda s, f: calls.append((s, f)),
                           artifacts_dir=art)
    return report, calls, art


def test_report_contract(padim_run, synthetic):
    """The report is plain JSON and valid against the committed schema; test numbers carry intervals."""
    import jsonschema

    from inference.engine.report import json_schema

    report, _, _ = padim_run
    json.dumps(report)
    jsonschema.validate(report, json_schema())
    for part in ("whole_folder",):
        assert set(report[part]) == {"image_auroc", "pixel_auroc", "aupro", "aupimo"}
    for name, estimate in report["test_part"].items():
        if name == "aupimo":  # 2 defect-free test images of 64 x 64 pixels: FPR 1e-5 is under one pixel
            assert estimate["value"] is None and "100,000 defect-free pixels" in report["aupimo"]["note"]
            continue
        assert estimate["low"] <= estimate["value"] <= estimate["high"], name
    assert set(report["techniques"]) == set(TECHS)
    n_good_test = sum(not e["anomalous"] for e in report["per_image"])
    for result in report["techniques"].values():
        assert result["failure"] is None
        assert 0.0 <= result["threshold_percentile"] <= 100.0  # of the defect-free validation pixels
        for key, estimate in result["test"].items():
            assert estimate["low"] is None or estimate["low"] <= estimate["high"], key
        regions = result["regions"]  # what an inspector counts, summed from the per-image counts
        assert regions["found"] == sum(e["regions"][result["technique"]][0] for e in report["per_image"])
        assert regions["defect_regions"] == sum(e["regions"][result["technique"]][1] for e in report["per_image"]) > 0
        assert regions["good_images"] == n_good_test
        assert regions["detection_rate"]["value"] == regions["found"] / regions["defect_regions"]
        assert regions["false_alarms_per_good_image"]["value"] == pytest.approx(
            regions["false_alarm_regions"] / n_good_test)
    assert report["recommended_technique"] == report["selection"]["chosen"] in TECHS
    assert report["device"] == "cpu" and report["threads"] >= 1 and report["model_memory_mb"] > 0
    breakdowns = report["breakdowns"]
    assert set(breakdowns["by_defect_type"]) == {"spot", "bar"}
    assert set(breakdowns["by_category"]) == {"structural", "surface"}
    assert set(breakdowns["by_background"]) == {"True", "False"}
    for sub in breakdowns["by_defect_type"].values():
        assert sub["threshold_free"]["image_auroc"] is not None  # against the good test images
        assert set(sub["segmentation"]) == set(TECHS)


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
    for name in ("roc", "pr", "pro", "iou_vs_threshold", "few_shot"):
        assert (Path(art) / report["curves"][name]).is_file()
    for entry in report["per_image"]:
        assert (Path(art) / entry["artifacts"]["overlay"]).is_file()
        assert (Path(art) / entry["artifacts"]["mask"]).is_file()
        assert set(entry["iou"]) == set(TECHS)
        outlined = np.asarray(PILImage.open(Path(art) / entry["artifacts"]["outline"]).convert("RGB"))
        truth_pixels = np.all(outlined == TRUTH_RGB, axis=-1).sum()
        # an anomalous image's ground truth is outlined on the picture; a defect-free one has none
        assert (truth_pixels > 0) == entry["anomalous"], entry["key"]


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
        e["artifacts"] = None
    for key in ("curves", "colour_scale"):  # made with the artifacts only
        first.pop(key)
        again.pop(key)
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
    assert _strip(a)["whole_folder"] == _strip(run_benchmark(train, test, cfg))["whole_folder"]


def test_cancellation(synthetic):
    train, test = synthetic
    n = {"calls": 0}

    def cancel():
        n["calls"] += 1
        return n["calls"] > 3

    with pytest.raises(BenchmarkCancelled):
        run_benchmark(train, test, BenchmarkConfig(**CFG), should_cancel=cancel)


def test_fewer_than_two_anomalous_images_are_refused_with_the_reason(synthetic):
    train, test = synthetic
    subset = [s for s in test if s.defect_type == "good"] + [s for s in test if s.defect_type == "spot"][:1]
    with pytest.raises(ValueError, match="1 anomalous test image.*at least 2 are needed"):
        run_benchmark(train, subset, BenchmarkConfig(**CFG))


def test_two_anomalous_images_of_two_types_fit_every_technique(synthetic):
    """Each defect type has one image: both used to land in the test part, and three techniques failed."""
    train, test = synthetic
    subset = [s for s in test if s.defect_type == "good"] + [test[4], test[8]]
    report = run_benchmark(train, subset, BenchmarkConfig(**CFG))
    assert report["split"]["validation_counts"]["good"] == 2
    assert sum(v for k, v in report["split"]["validation_counts"].items() if k != "good") == 1
    assert all(r["failure"] is None for r in report["techniques"].values())
    # one anomalous validation image: nothing can be cross-fitted, a rule fixed in advance decides
    entries = {e["technique"]: e for e in report["selection"]["entries"]}
    assert entries["f1"]["failure"]["reason"] == "too_few_anomalous_validation_images"
    assert entries["normal_max"]["cv_iou"] is None
    assert report["selection"]["chosen"] == "iou_curve"
    assert "no technique could be cross-fitted" in report["selection"]["rule"]


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


def _sample(key, defect_type, category=None):
    return Sample(image_path=key, mask_path=None if defect_type == "good" else key + "_mask",
                  defect_type=defect_type, category=category, background=True, key=key)


def _breakdown_case(n_other: int):
    """2 good + 2 'hole' (structural) + n_other 'dirt' (contamination) test images, as maps and masks."""
    import numpy as np

    from inference.engine.evaluation import PixelCounts

    test = [_sample("g0", "good"), _sample("g1", "good"), _sample("h0", "hole", "structural"),
            _sample("h1", "hole", "structural")] + [_sample(f"d{k}", "dirt", "contamination") for k in range(n_other)]
    n = len(test)
    labels = np.array([s.is_anomalous for s in test])
    masks = np.zeros((n, 8, 8), dtype=bool)
    masks[2:, 2:5, 2:5] = True
    maps = np.random.default_rng(0).random((n, 8, 8)).astype(np.float32)
    maps[2:4] += 2 * masks[2:4]
    maps[4:, 0, :] = 5.0  # every 'dirt' image has false positives
    ti = list(range(n))
    counts = {"f1": PixelCounts.at(maps, masks, 1.5)}
    return test, ti, maps, masks, labels, counts


def test_subset_metrics_do_not_move_when_another_subset_grows():
    from inference.engine.runner import _breakdowns

    small = _breakdowns(*_breakdown_case(1)[:1], [], *_breakdown_case(1)[1:])
    test, ti, maps, masks, labels, counts = _breakdown_case(20)
    large = _breakdowns(test, [], ti, maps, masks, labels, counts)
    assert small.by_category["structural"].segmentation == large.by_category["structural"].segmentation
    assert large.by_category["structural"].segmentation["f1"].iou == 1.0  # its own pixels only
    assert large.by_category["contamination"].segmentation["f1"].iou < 0.5


def test_breakdown_of_a_subset_wholly_in_the_validation_part():
    """A category whose only image fell in the validation part still gets whole-folder numbers."""
    import numpy as np

    from inference.engine.evaluation import PixelCounts
    from inference.engine.runner import _breakdowns

    test = [_sample("g0", "good"), _sample("g1", "good"), _sample("s0", "hole", "structural"),
            _sample("s1", "hole", "structural"), _sample("c0", "mixed", "combined")]
    labels = np.array([False, False, True, True, True])
    masks = np.zeros((5, 8, 8), dtype=bool)
    masks[2:, 2:5, 2:5] = True
    maps = np.random.default_rng(0).random((5, 8, 8)).astype(np.float32) + 2 * masks
    ti = [1, 3]
    counts = {"f1": PixelCounts.at(maps[ti], masks[ti], 1.5)}
    b = _breakdowns(test, [0, 2, 4], ti, maps, masks, labels, counts)

    assert b.by_category["structural"].n_anomalous_test == 1 and set(b.by_category["structural"].segmentation) == {"f1"}
    combined = b.by_category["combined"]
    assert combined.n_anomalous_test == 0 and combined.segmentation == {}
    assert combined.note == "all 1 anomalous image(s) of this subset are in the validation part"
    assert combined.whole_folder.image_auroc == 1.0  # c0 against g0 and g1
    assert set(b.by_defect_type) == {"hole", "mixed"} and set(b.by_background) == {"True"}


# ---- issue 12: per-run peak memory and progress details ----------------------------------------
def test_peak_memory_is_the_runs_own_not_an_earlier_runs(synthetic):
    """ru_maxrss is per process: a run after a big allocation used to report that allocation."""
    import numpy as np

    from inference.engine.common import RunPeakMemory, peak_rss_mb

    train, test = synthetic
    run_benchmark(train, test, BenchmarkConfig(**CFG))  # libraries loaded: the resident baseline
    big = np.ones(800 * 2**20 // 8)  # 800 MiB touched, then freed: an "earlier run" of this worker
    del big
    process_peak = peak_rss_mb()
    details = []
    report = run_benchmark(train, test, BenchmarkConfig(**CFG), on_detail=details.append)
    assert RunPeakMemory().start().method != "ru_maxrss"  # Linux: measured per run
    assert 0 < report["peak_rss_mb"] < process_peak - 500, (report["peak_rss_mb"], process_peak)
    fit = [d for d in details if d["stage"] == "fit"]
    assert fit and fit[-1]["done"] == fit[-1]["total"] == len(train) and fit[-1]["unit"] == "images"
    inference = [d for d in details if d["stage"] == "inference"]
    assert inference[-1]["done"] == inference[-1]["total"]
    assert any(d["rate"] and d["eta_seconds"] is not None for d in inference)


def test_cflow_details_carry_epochs_and_losses(synthetic):
    train, test = synthetic
    details = []
    run_benchmark(train, test, BenchmarkConfig(model="cflow", epochs=2, coupling_blocks=2, condition_vector=16,
                                               fiber_batch_size=256, techniques=("f1",), **CFG),
                  on_detail=details.append)
    fit = [d for d in details if d["stage"] == "fit"]
    last = fit[-1]
    assert last["epochs"] == 2 and last["epoch"] >= 1 and last["unit"] == "steps"
    assert last["history"] and {"epoch", "train_loss", "val_loss"} <= set(last["history"][-1])


def test_outline_is_the_masks_border_and_the_prediction_is_drawn_over_the_truth():
    from inference.engine.artifacts import outline, outlined
    from inference.engine.colours import PREDICTION_RGB

    mask = np.zeros((8, 8), dtype=bool)
    mask[2:6, 2:6] = True
    border = outline(mask)
    assert border.sum() == 12 and not border[3:5, 3:5].any()  # the 4x4 square's ring, its inside left out
    edge = np.zeros((8, 8), dtype=bool)
    edge[:, :3] = True  # touches the picture's edge: closed along it
    assert outline(edge)[:, 0].all()
    picture = outlined(np.zeros((8, 8, 3), dtype=np.uint8), truth=mask, predicted=edge)
    assert np.all(picture[2, 4] == TRUTH_RGB) and np.all(picture[2, 2] == PREDICTION_RGB)
    assert not picture[4, 4].any()  # inside the truth: the image itself
