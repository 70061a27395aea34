"""PaDiM on the real MVTec AD bottle category with the real EfficientNet-Lite0 weights.

Skipped only when the data folder is absent AND ``CI`` is unset; in CI a missing
folder is a failure. Reference (this engine, 256 px, strides 4/8/16, 100 channels):
image AUROC 0.996, pixel AUROC 0.981, AUPRO 0.922 on the whole test folder.
"""

import os
from pathlib import Path

import pytest

from inference.engine import BenchmarkConfig, Sample, run_benchmark, samples_from_scan

REPO_ROOT = Path(__file__).resolve().parents[3]
BOTTLE = REPO_ROOT.parent / "shared" / "data" / "mvtec_ad" / "bottle"


def bottle_samples(root: Path) -> tuple[list[Sample], list[Sample]]:
    from annotator.layouts import scan_dataset  # Django-free

    scan = scan_dataset(root, layout="mvtec")
    return samples_from_scan(scan.images, key=scan.relative)


@pytest.fixture(scope="module")
def bottle():
    if not BOTTLE.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"real data missing in CI: {BOTTLE}")
        pytest.skip(f"real data not present: {BOTTLE}")
    return bottle_samples(BOTTLE)


@pytest.mark.real_data
def test_padim_bottle_reaches_published_quality(bottle):
    train, test = bottle
    assert len(train) == 209 and len(test) == 83
    report = run_benchmark(train, test, BenchmarkConfig(model="padim", image_size=256, device="cpu"))
    tf = report["threshold_free"]
    assert tf["image_auroc"] >= 0.995, tf
    assert tf["pixel_auroc"] >= 0.978, tf
    assert tf["aupro"] >= 0.92, tf
    assert report["model_info"]["strides"] == [4, 8, 16] and report["model_info"]["n_features"] == 100
    assert "efficientnet-lite0" in report["model_info"]["weights"]
