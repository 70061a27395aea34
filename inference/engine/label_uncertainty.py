"""Label uncertainty in the per-category and per-background breakdowns.

A subset's final-label numbers count each anomalous test image wholly in the subset its final
label names. Where annotators disagreed on an image (it carries ``Sample.category_shares`` and
``background_shares``), that is one reading among several, so each subset is also measured with
every anomalous test image weighted by the share of its annotators who chose the subset's value:
its TP, FP and FN pixels count with that weight in the pooled sums. An undisputed image weighs 1
in its final label's subset and 0 elsewhere; an image one of two annotators called ``surface``
weighs 0.5 in ``surface``, whatever its final label.

A subset *depends on disputed labels* when the weighted IoU of the run's chosen technique lies
outside the 95 % bootstrap interval of its final-label IoU (the subset's final-label anomalous
test images resampled, :class:`evaluation.Resampler`): moving the disputed images as their
annotators voted changes the figure by more than the test images' own sampling noise. A subset
that has test images only through disputed votes (no final-label test image) depends on them
by definition.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

from . import evaluation
from .report import Estimate, LabelUncertainty, Segmentation
from .types import Sample

def _shares(sample: Sample, dimension: str):
    return sample.category_shares if dimension == "category" else sample.background_shares


def _final(sample: Sample, dimension: str):
    return sample.category if dimension == "category" else sample.background


def is_disputed(sample: Sample) -> bool:
    """Its annotators gave different labels (the shares of both dimensions are then known, so an
    image disputed on its category alone still weighs by its agreed background)."""
    return sample.category_shares is not None or sample.background_shares is not None


def vote_weight(sample: Sample, dimension: str, value: Hashable) -> float:
    """The share of the image's annotators who chose ``value`` (1 or 0 by its final label where
    they agreed)."""
    shares = _shares(sample, dimension)
    if shares is not None:
        return float(shares.get(value, 0.0))
    return 1.0 if _final(sample, dimension) == value else 0.0


def voted_values(samples: Sequence[Sample], dimension: str) -> set:
    """Every value of ``dimension`` some annotator of a disputed image chose."""
    return {value for s in samples for value, share in (_shares(s, dimension) or {}).items() if share > 0}


def _weighted_segmentation(counts: evaluation.PixelCounts, weights: np.ndarray) -> Segmentation | None:
    keep = weights > 0
    if not keep.any():
        return None
    c = counts.take(np.flatnonzero(keep))
    stats = evaluation.segmentation_stats(c, np.ones(int(keep.sum()), bool), weights[keep][None, :])
    return Segmentation(**{k: evaluation._value(stats[k][0])
                           for k in ("iou", "dice", "precision", "recall", "fpr", "mean_image_iou")})


def label_uncertainty(samples: Sequence[Sample], dimension: str, value: Hashable,
                      counts: dict[str, evaluation.PixelCounts], final_rows: Sequence[int],
                      technique: str | None, seed: int) -> LabelUncertainty:
    """One subset's vote-weighted numbers (see the module docstring).

    ``samples``: the run's anomalous test images; ``counts``: per technique their pixel counts, in
    the same order; ``final_rows``: the positions in ``samples`` of the subset's final-label members.
    """
    weights = np.array([vote_weight(s, dimension, value) for s in samples], dtype=np.float64)
    final_rows = np.asarray(final_rows, dtype=int)
    member = np.zeros(len(samples), bool)
    member[final_rows] = True
    disputed = np.array([is_disputed(s) for s in samples], bool)
    weighted = {name: _weighted_segmentation(c, weights) for name, c in counts.items()}
    n_disputed = int((disputed & ((weights > 0) | member)).sum())
    final_iou, flagged = Estimate(None), False
    if technique in counts:
        if len(final_rows):
            c = counts[technique].take(final_rows)
            ones = np.ones(len(final_rows), bool)
            resampler = evaluation.Resampler(ones, seed)
            final_iou = resampler.estimate(evaluation.segmentation_stats(c, ones)["iou"],
                                           evaluation.segmentation_stats(c, ones, resampler.weights)["iou"])
        voted = weighted[technique].iou if weighted[technique] is not None else None
        # without a disputed image here the weighted figure is the final one (a percentile
        # interval may still miss its own point estimate: that is no dependence on labels)
        if voted is not None and n_disputed:
            if final_iou.value is None:
                flagged = not len(final_rows)  # the subset exists in the test part only by votes
            elif final_iou.low is not None:
                flagged = not (final_iou.low <= voted <= final_iou.high)
    return LabelUncertainty(
        weighted=weighted, weight_total=float(weights.sum()),
        n_disputed=n_disputed,
        technique=technique if technique in counts else None, final_iou=final_iou,
        depends_on_disputed_labels=bool(flagged),
    )
