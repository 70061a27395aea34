"""Intervals of the deployed *procedure*: validation images redrawn and every threshold refitted.

The fixed-threshold intervals (:class:`evaluation.Resampler`) resample the test images only, with
the threshold fitted once on the whole validation part. With few labelled defects the largest
uncertainty is where that threshold lands: another handful of validation images would have put it
elsewhere. Here each bootstrap resample also redraws the validation images (stratified, seeded,
independently of the test draw), refits the technique on the redrawn set and measures the refitted
threshold on the resampled test images. The spread of those test IoUs is the interval of "fit this
technique on a few labelled images of the product, then inspect": wider than the fixed one.

Every refit is a weighted sum over per-image counts at one shared grid of thresholds
(:class:`evaluation.GridCounts`): the validation part's candidate thresholds, the point fits
themselves, every defect-free image's maximum (``normal_max`` refits exactly), fine quantiles
of the defect-free pixels around each ``normal_fpr`` rule's target, and every resample's own
``normal_sigma`` threshold (its weighted mean and standard deviation of the good pixels, exact
from per-image sums and sums of squares, :class:`thresholds.PixelMoments`). ``normal_max`` and
``normal_sigma`` refit exactly; the others among the grid's thresholds (the IoU curve's own fit
takes quantiles of the images it is given, here those of the whole validation part): as good
by their own criterion to about 1e-3.
"""

from __future__ import annotations

import numpy as np

from . import evaluation
from .report import DecisionEstimates, Estimate
from .thresholds import TECHNIQUES, NormalFPR, PixelMoments, candidate_thresholds

# FPR levels, relative to a normal_fpr rule's target, whose defect-free-pixel quantiles join the grid.
_FPR_LEVELS = np.geomspace(0.05, 20.0, 400)


def _fpr_targets(names, target: float) -> list[float]:
    """The false-positive rates the ``normal_fpr`` rules among ``names`` aim at (``target`` alone when none)."""
    aims = {TECHNIQUES[n].target_for(target) for n in names if isinstance(TECHNIQUES.get(n), NormalFPR)}
    return sorted(aims) or [target]


def _grid(val: evaluation.ValidationData, fitted: dict[str, float], target: float,
          exact: np.ndarray | None = None) -> np.ndarray:
    """The shared thresholds of every refit; ``exact``: refits computed beforehand (``normal_sigma``'s)."""
    parts = [candidate_thresholds(val.maps, val.masks), np.array(list(fitted.values()), dtype=np.float64)]
    good = ~val.anomalous
    if good.any():
        maxima = val.maps[good].reshape(int(good.sum()), -1).max(axis=1)
        parts.append(np.nextafter(maxima, np.array(np.inf, dtype=maxima.dtype)).astype(np.float64))
        for aim in _fpr_targets(fitted, target):
            levels = np.clip(1.0 - aim * _FPR_LEVELS, 0.0, 1.0)
            parts.append(np.quantile(val.maps[good], levels).astype(val.maps.dtype).astype(np.float64))
    if exact is not None:
        parts.append(exact[np.isfinite(exact)])
    if val.synthetic_maps is not None and len(val.synthetic_maps):
        parts.append(candidate_thresholds(val.synthetic_maps, val.synthetic_masks))
    return np.unique(np.concatenate(parts))


def _first_at_most(values: np.ndarray, limit: float) -> np.ndarray:
    """Per row, the first (lowest-threshold) index whose value is at most ``limit``."""
    ok = values <= limit + 1e-15
    return np.where(ok.any(axis=1), np.argmax(ok, axis=1), values.shape[1] - 1)


def refit_indices(name: str, grid: evaluation.GridCounts, weights: np.ndarray, anomalous: np.ndarray,
                  target: float, synthetic: tuple[evaluation.GridCounts, np.ndarray] | None = None,
                  sigma: tuple[PixelMoments, float] | None = None) -> np.ndarray:
    """(B,) grid indices of technique ``name`` refitted on each weighted validation resample.

    ``sigma``: the validation images' pixel moments and k, for ``normal_sigma``: its refits are
    exact when the grid holds them (``_grid(..., exact=moments.thresholds(weights, k))``).
    """
    w = weights
    if name in ("iou_curve", "f1", "roc"):  # the cross-fitting's own grid fit, one row per resample
        return evaluation.grid_fit_weighted(name, grid, w, anomalous)
    if name == "synthetic":
        syn_grid, source = synthetic
        ws = w[:, source]  # a synthetic copy is drawn as often as the defect-free image it came from
        ious = evaluation._ratio(syn_grid.tp, syn_grid.fp + syn_grid.pos[:, None])
        return evaluation.last_argmax_rows(evaluation._ratio(ws @ ious, ws.sum(axis=1)[:, None]))
    if name == "normal_sigma":
        if sigma is None:
            raise ValueError("refitting normal_sigma needs the validation images' pixel moments (sigma=...)")
        moments, k = sigma
        refits = moments.thresholds(w, k)
        return np.clip(np.searchsorted(grid.thresholds, refits, side="left"), 0, len(grid.thresholds) - 1)
    good = ~anomalous
    good_fpr = evaluation._ratio(w[:, good] @ grid.fp[good], (w[:, good] @ (grid.pos + grid.neg)[good])[:, None])
    spec = TECHNIQUES.get(name)
    if isinstance(spec, NormalFPR):
        return _first_at_most(good_fpr, spec.target_for(target))
    if name == "normal_max":
        return _first_at_most(good_fpr, 0.0)
    raise KeyError(f"no refit on the grid for threshold technique {name!r}")


def decision_estimates(val: evaluation.ValidationData, fitted: dict[str, float], test_maps: np.ndarray,
                       test_masks: np.ndarray, test_weights: np.ndarray, test_point_iou: dict[str, float | None],
                       target: float, seed: int) -> dict[str, DecisionEstimates]:
    """Per fitted technique: the refitted thresholds' interval and the test IoU interval they give.

    ``test_weights``: the test part's bootstrap weights (the fixed intervals' own draw), paired
    here with an independent stratified draw of the validation images.
    """
    if not fitted:
        return {}
    val_weights = evaluation.Resampler(val.anomalous, seed, resamples=len(test_weights), stream=1).weights
    sigma = exact = None
    if "normal_sigma" in fitted:
        sigma = (PixelMoments.of(val.maps, ~val.anomalous), val.normal_sigma_k)
        exact = sigma[0].thresholds(val_weights, sigma[1])
    thresholds = _grid(val, fitted, target, exact)
    val_grid = evaluation.GridCounts(val.maps, val.masks, thresholds)
    test_grid = evaluation.GridCounts(test_maps, test_masks, thresholds)
    synthetic = None
    if "synthetic" in fitted and val.synthetic_maps is not None and len(val.synthetic_maps):
        synthetic = (evaluation.GridCounts(val.synthetic_maps, val.synthetic_masks, thresholds), val.synthetic_source)
    interval = evaluation.Resampler.percentile_interval
    out = {}
    for name, point in fitted.items():
        k = refit_indices(name, val_grid, val_weights, val.anomalous, target, synthetic, sigma)
        tp = test_grid.tp[:, k].T  # (B, test images): each resample's counts at its own refit
        fp = test_grid.fp[:, k].T
        ious = evaluation._ratio((test_weights * tp).sum(axis=1),
                                 (test_weights * (fp + test_grid.pos[None, :])).sum(axis=1))
        low, high = interval(thresholds[k])
        iou_low, iou_high = interval(ious)
        out[name] = DecisionEstimates(Estimate(float(point), low, high),
                                      Estimate(test_point_iou.get(name), iou_low, iou_high)
                                      if test_point_iou.get(name) is not None else Estimate(None),
                                      [round(float(x), 6) if np.isfinite(x) else None for x in ious])
    return out
