"""The validation/test split of the benchmark protocol (no torch: the launch check uses it)."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence

from .types import Sample


def split_validation_test(
    test: Sequence[Sample], val_fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Stratified, seeded split of the test folder into validation and test parts.

    Within every defect type (``good`` included) the images are sorted by key, shuffled
    with ``random.Random(seed)`` and the first ``round(n * val_fraction)`` go to
    validation; with ``n >= 2`` each part gets at least one image of the type. Anomalous
    defect types with a single image are pooled and split together the same way (alone,
    ``round(0.5) == 0`` would send every one of them to the test part). Finally, with at
    least two anomalous images in all, each part is guaranteed one: the thresholds need
    one to be fitted on and the test part one to be measured on. Returns index lists into
    ``test`` (validation, test), each in the original order.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    rng = random.Random(seed)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(test):
        groups[s.defect_type].append(i)
    singles = sorted(i for dtype, idx in groups.items() if dtype != "good" and len(idx) == 1 for i in idx)
    strata = [groups[d] for d in sorted(groups) if d == "good" or len(groups[d]) > 1]
    if singles:
        strata.append(singles)
    val: list[int] = []
    for members in strata:
        idx = sorted(members, key=lambda i: (test[i].report_key, i))
        rng.shuffle(idx)
        n = len(idx)
        k = int(round(n * val_fraction))
        if n >= 2:
            k = min(max(k, 1), n - 1)
        val.extend(idx[:k])
    val_set = set(val)
    anomalous = sorted((i for i, s in enumerate(test) if s.is_anomalous), key=lambda i: (test[i].report_key, i))
    if len(anomalous) >= 2:
        in_val = [i for i in anomalous if i in val_set]
        in_test = [i for i in anomalous if i not in val_set]
        if not in_val:
            val_set.add(rng.choice(in_test))
        elif not in_test:
            val_set.discard(rng.choice(in_val))
    val_idx = [i for i in range(len(test)) if i in val_set]
    test_idx = [i for i in range(len(test)) if i not in val_set]
    return val_idx, test_idx


def split_problems(test: Sequence[Sample]) -> list[str]:
    """Why the validation/test split of ``test`` could not serve a run (empty when it can).

    The benchmark needs at least two anomalous images (one to fit the thresholds on, one to
    measure on: :func:`split_validation_test` then puts one on each side) and two defect-free
    ones (image AUROC, the defect-free thresholds and the false-positive rate need one on
    each side). The launch check calls this, so it refuses exactly the runs that would fail.
    """
    n_anomalous = sum(1 for s in test if s.is_anomalous)
    n_good = len(test) - n_anomalous
    problems = []
    if n_anomalous < 2:
        problems.append(
            f"{n_anomalous} anomalous test image(s); at least 2 are needed: one in the validation part "
            "to fit the thresholds on, one in the test part to measure them on."
        )
    if n_good < 2:
        problems.append(
            f"{n_good} defect-free test image(s); at least 2 are needed: image AUROC, the defect-free "
            "thresholds and the false-positive rate need one in each part."
        )
    return problems


def split_summary(test: Sequence[Sample], val_idx, test_idx) -> dict:
    def counts(idx):
        c: dict[str, int] = defaultdict(int)
        for i in idx:
            c[test[i].defect_type] += 1
        return dict(sorted(c.items()))

    return {
        "validation_counts": counts(val_idx),
        "test_counts": counts(test_idx),
        "validation": [test[i].report_key for i in val_idx],
        "test": [test[i].report_key for i in test_idx],
    }
