"""PaDiM on the real MVTec AD bottle category with the real EfficientNet-Lite0 weights.

Skipped only when the data folder is absent AND ``CI`` is unset; in CI a missing
folder is a failure. Reference (this engine, 256 px, strides 4/8/16, 100 channels):
image AUROC 0.996, pixel AUROC 0.981, AUPRO 0.922 on the whole test folder.
"""

import os
from pathlib import Path

import pytest

from inference.engine import BenchmarkConfig, Sample, run_benchmark, samples_from_scan
from tests.conftest import REAL_BOTTLE as BOTTLE, require_real_data


# The suite runs one test at a time: a real-data fit may use every core (idle threads wait
# passively, OMP_WAIT_POLICY=PASSIVE, set by config before torch loads), as a worker does.
THREADS = len(os.sched_getaffinity(0))


def bottle_samples(root: Path) -> tuple[list[Sample], list[Sample]]:
    from annotator.layouts import scan_dataset  # Django-free

    scan = scan_dataset(root, layout="mvtec")
    return samples_from_scan(scan.images, key=scan.relative)


@pytest.fixture(scope="module")
def bottle():
    return bottle_samples(require_real_data(BOTTLE))


@pytest.mark.real_data
def test_padim_bottle_reaches_published_quality(bottle):
    """Also the decision protocol on real data: seeds 0-4 as repeated splits of one fitted model."""
    train, test = bottle
    assert len(train) == 209 and len(test) == 83
    report = run_benchmark(train, test, BenchmarkConfig(model="padim", image_size=256, device="cpu",
                                                        num_threads=THREADS, repeats=5))
    tf = report["whole_folder"]
    assert tf["image_auroc"] >= 0.995, tf
    assert tf["pixel_auroc"] >= 0.978, tf
    assert tf["aupro"] >= 0.92, tf
    for name, estimate in report["test_part"].items():  # AUPIMO's too: 10 good test images, 655 360 pixels
        assert estimate["low"] <= estimate["value"] <= estimate["high"], name
    assert report["aupimo"]["note"] == "" and report["aupimo"]["n_images"] == 32
    chosen = report["selection"]["chosen"]
    assert chosen == report["recommended_technique"]
    assert report["techniques"][chosen]["test"]["iou"]["value"] > 0.45
    assert report["techniques"][chosen]["regions"]["detection_rate"]["value"] > 0.8
    # the in-sample rule always picked f1; cross-fitting does not, across the five splits
    assert report["repeats"]["seeds"] == [0, 1, 2, 3, 4]
    assert set(report["repeats"]["chosen"]) != {"f1"}, report["repeats"]["chosen"]
    curves = {c["technique"]: c for c in report["few_shot"]["curves"]}
    assert report["few_shot"]["n_available"] == 31 and curves["iou_curve"]["enough"] <= 31
    assert curves["synthetic"]["points"][0]["n_anomalous"] == 0  # the label-free baseline
    assert report["model_info"]["strides"] == [4, 8, 16] and report["model_info"]["n_features"] == 100
    assert "efficientnet-lite0" in report["model_info"]["weights"]


@pytest.mark.real_data
def test_patchcore_bottle_meets_the_issue_numbers(bottle):
    """PatchCore, whole bottle test folder at 256 px, seed 0: image AUROC >= 0.995, pixel >= 0.98
    (measured 1.000 / 0.982 / AUPRO 0.930 with 1 % of the 214 016 training patches)."""
    train, test = bottle
    report = run_benchmark(train, test, BenchmarkConfig(model="patchcore", image_size=256, device="cpu",
                                                        num_threads=THREADS, techniques=("iou_curve",)))
    tf = report["whole_folder"]
    assert tf["image_auroc"] >= 0.995, tf
    assert tf["pixel_auroc"] >= 0.98, tf
    info = report["model_info"]
    assert info["strides"] == [8, 16] and info["training_patches"] == 209 * 32 * 32
    assert info["memory_bank"] == round(0.01 * 209 * 32 * 32)


@pytest.mark.real_data
def test_reconstruction_bottle_localizes_defects(bottle):
    """Feature reconstruction, whole bottle test folder at 256 px, seed 0: pixel AUROC >= 0.90
    (measured 0.981, image AUROC 0.999, AUPRO 0.927, fit 72 s on one thread)."""
    train, test = bottle
    report = run_benchmark(train, test, BenchmarkConfig(model="reconstruction", image_size=256, device="cpu",
                                                        num_threads=THREADS, techniques=("iou_curve",)))
    tf = report["whole_folder"]
    assert tf["pixel_auroc"] >= 0.90, tf
    assert tf["image_auroc"] >= 0.95, tf
    losses = report["model_info"]["train_loss"]
    assert len(losses) == 10 and losses[-1] < losses[0]


@pytest.mark.real_data
def test_attribution_bottle_localizes_defects(bottle):
    """VAE attribution (gradient x input of the negative ELBO), whole bottle test folder at 256 px,
    seed 0: pixel AUROC >= 0.85 (measured 0.976 in the study of attribution.py)."""
    train, test = bottle
    report = run_benchmark(train, test, BenchmarkConfig(model="attribution", image_size=256, device="cpu",
                                                        num_threads=THREADS, techniques=("iou_curve",)))
    tf = report["whole_folder"]
    assert tf["pixel_auroc"] >= 0.85, tf
    assert report["model_info"]["attribution_target"] == "elbo"
