"""How good the workspace's category suggestion is on real labels: leave-one-out on MVTec AD bottle.

    .venv/bin/python bench/label_suggestions.py --data ../shared/data/mvtec_ad/bottle \
        --labels ../shared/data/labels/mvtec_bottle_reference.csv --out bench/results/label-suggestions.json

For every labelled image it computes the suggestion features (``annotator.suggestion_features``:
mask shape, and pixels against the image's nearest defect-free training image, found the way the
workspace finds it: ``inference.engine.similarity.nearest_references``), then, for each image in
turn, fits the classifier on the other labels and suggests a category for it (top-1). The defect
folder's name is never an input. Writes JSON: the accuracy, the majority-class baseline, the
confusion matrix (rows: the reference label, columns: the suggestion), per-class recall, and the
time per suggestion (features of one image + the prediction; the fit is the beat task's, timed apart).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from annotator import suggestion_features as sf  # noqa: E402
from inference.engine.pixels import decode_image, decode_mask  # noqa: E402
from inference.engine.similarity import nearest_references  # noqa: E402

CATEGORIES = ("structural", "surface", "contamination", "combined")


def read_labels(path: Path, product: str) -> list[tuple[str, str]]:
    """(path relative to the product folder, category) of each reference label."""
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    prefix = f"{product}/"
    return [(row["image_path"][len(prefix):], row["defect_category"]) for row in rows
            if row["image_path"].startswith(prefix)]


def mask_of(root: Path, relative: str) -> Path:
    """MVTec AD's mask of ``test/<defect>/<stem>.png``: ``ground_truth/<defect>/<stem>_mask.png``."""
    parts = Path(relative).parts
    return root / "ground_truth" / parts[1] / f"{Path(parts[2]).stem}_mask.png"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="the MVTec AD product folder (e.g. .../bottle)")
    parser.add_argument("--labels", type=Path, required=True, help="reference labels CSV (image_path,background,defect_category)")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here (default: print it)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = args.data.resolve()
    labels = read_labels(args.labels, root.name)
    if not labels:
        sys.exit(f"no label of {root.name} in {args.labels}")

    references = sorted(str(p) for p in (root / "train" / "good").glob("*.png"))
    started = time.perf_counter()
    found, weights = nearest_references(references, [str(root / relative) for relative, _ in labels])
    reference_seconds = time.perf_counter() - started

    vectors, seconds = [], []
    for (relative, _), (index, _) in zip(labels, found):
        image_path = root / relative
        started = time.perf_counter()
        image = np.asarray(decode_image(image_path))
        reference = np.asarray(decode_image(references[index]))
        mask = decode_mask(mask_of(root, relative)).defect
        vector = sf.features(image, reference, mask)
        seconds.append(time.perf_counter() - started)
        vectors.append(vector)
    vectors = np.asarray(vectors)
    categories = [category for _, category in labels]

    started = time.perf_counter()
    model = sf.fit(vectors, categories)
    fit_seconds = time.perf_counter() - started
    started = time.perf_counter()
    for vector in vectors:
        model.predict(vector)
    predict_seconds = (time.perf_counter() - started) / len(vectors)

    predictions = sf.leave_one_out(vectors, categories)
    correct = sum(p == c for p, c in zip(predictions, categories))
    present = [c for c in CATEGORIES if c in categories or c in predictions]
    confusion = {truth: {guess: sum(1 for p, c in zip(predictions, categories) if c == truth and p == guess)
                         for guess in present} for truth in present}
    counts = Counter(categories)
    result = {
        "what": "leave-one-out top-1 accuracy of the category suggestion (no defect folder name as input)",
        "data": f"MVTec AD {root.name}, {len(labels)} reference labels ({args.labels.name})",
        "classifier": f"logistic regression (L2, C={sf.REGULARISATION_C}, balanced class weights) on standardised features",
        "features": list(sf.FEATURE_NAMES),
        "feature_version": sf.FEATURE_VERSION,
        "nearest_reference_weights": Path(weights).name if weights else weights,
        "labels": len(labels),
        "label_counts": dict(counts),
        "loo_accuracy": round(correct / len(labels), 4),
        "loo_correct": correct,
        "majority_baseline": round(max(counts.values()) / len(labels), 4),
        "confusion": confusion,
        "confusion_note": "rows: reference label; columns: suggestion",
        "recall": {c: round(confusion[c][c] / counts[c], 4) for c in present if counts[c]},
        "seconds_per_suggestion": {
            "features_median": round(float(np.median(seconds)), 4),
            "features_max": round(float(np.max(seconds)), 4),
            "predict": round(predict_seconds, 6),
            "note": "decoding the image, its reference and mask at full size (900x900) and computing the features;"
                    " the workspace reads cached features and only predicts",
        },
        "fit_seconds_all_labels": round(fit_seconds, 4),
        "nearest_references_seconds": round(reference_seconds, 2),
        "misses": [{"image": relative, "label": c, "suggested": p}
                   for (relative, c), p in zip(labels, predictions) if p != c],
        "threads": args.threads,
        # Timings on a shared machine: its load (1, 5, 15 min) when the run ended says how busy it was.
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "cpu_count": os.cpu_count(),
    }
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
