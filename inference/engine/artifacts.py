"""Image and curve artifacts (PNG). Uses matplotlib's object API with the Agg canvas only,
so no global pyplot state / GUI backend is touched (safe inside a web worker)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from . import metrics
from .colours import PREDICTION_RGB, TRUTH_RGB
from .data import load_native


def _colormap(values01: np.ndarray) -> np.ndarray:
    from matplotlib import colormaps

    return (colormaps["jet"](values01)[..., :3] * 255).astype(np.uint8)


def outline(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """The mask's inner border, ``width`` pixels wide: the mask minus its erosion."""
    from scipy import ndimage  # imported here: fit and inference do not need SciPy's memory

    mask = np.asarray(mask, dtype=bool)
    # border_value=0: a region touching the picture's edge is closed along the edge too
    return mask & ~ndimage.binary_erosion(mask, iterations=width, border_value=0)


def outlined(rgb: np.ndarray, truth: np.ndarray | None, predicted: np.ndarray) -> np.ndarray:
    """The picture with the ground truth (when given) and the prediction outlined; where they run
    together the prediction is drawn over the truth (the truth is the one in the legend first)."""
    width = max(1, round(max(rgb.shape[:2]) / 256))  # visible in a tile at any canvas size
    out = rgb.copy()
    if truth is not None:
        out[outline(truth, width)] = TRUTH_RGB
    out[outline(predicted, width)] = PREDICTION_RGB
    return out


def save_image_artifacts(
    out_dir: Path, stem: str, image_path: str, amap: np.ndarray, threshold: float, lo: float, hi: float,
    image_size: int, truth: np.ndarray | None = None,
) -> dict:
    """Heat-map overlay, predicted mask and the picture with the ground truth (``truth``, on the
    map's canvas; None for a defect-free image) and prediction outlined, for one image; returns
    paths relative to out_dir.parent."""
    out_dir.mkdir(parents=True, exist_ok=True)
    # the map is on the evaluation canvas: the picture is resized (bilinear) to it
    rgb = np.asarray(Image.fromarray(load_native(image_path)).resize(amap.shape[::-1], Image.BILINEAR))
    norm = np.clip((amap - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(amap)
    heat = _colormap(norm)
    overlay = (0.55 * rgb + 0.45 * heat).astype(np.uint8)
    predicted = amap >= threshold
    mask = (predicted * 255).astype(np.uint8)
    ov_path = out_dir / f"{stem}_overlay.png"
    mk_path = out_dir / f"{stem}_mask.png"
    ol_path = out_dir / f"{stem}_outline.png"
    Image.fromarray(overlay).save(ov_path)
    Image.fromarray(mask).save(mk_path)
    has_truth = truth is not None and bool(np.any(truth))
    Image.fromarray(outlined(rgb, truth if has_truth else None, predicted)).save(ol_path)
    root = out_dir.parent
    return {"overlay": str(ov_path.relative_to(root)), "mask": str(mk_path.relative_to(root)),
            "outline": str(ol_path.relative_to(root))}


def _figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 4), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def _thin(x: np.ndarray, y: np.ndarray, n: int = 2000):
    if len(x) <= n:
        return x, y
    idx = np.unique(np.linspace(0, len(x) - 1, n).astype(int))
    return x[idx], y[idx]


def save_curves(
    curves_dir: Path, test_maps: np.ndarray, test_masks: np.ndarray, val_maps: np.ndarray, val_masks: np.ndarray,
    thresholds: dict[str, float],
) -> dict:
    """ROC, PR and PRO curves (test part) and IoU-vs-threshold (validation part) as PNGs."""
    from .thresholds import IoUCurve, ThresholdError

    curves_dir.mkdir(parents=True, exist_ok=True)
    out: dict[str, str] = {}
    root = curves_dir.parent
    ranked = metrics.RankedPixels(test_maps, test_masks)
    if ranked.both_classes:
        fpr, tpr = ranked.roc_curve()
        fig, ax = _figure()
        ax.plot(*_thin(fpr, tpr))
        ax.plot([0, 1], [0, 1], "k--", lw=0.5)
        ax.set(xlabel="false-positive rate", ylabel="true-positive rate", title="Pixel ROC (test part)")
        fig.savefig(curves_dir / "roc.png")
        out["roc"] = str((curves_dir / "roc.png").relative_to(root))

        rec, prec = ranked.pr_curve()
        fig, ax = _figure()
        ax.plot(*_thin(rec, prec))
        ax.set(xlabel="recall", ylabel="precision", title="Pixel precision-recall (test part)")
        fig.savefig(curves_dir / "pr.png")
        out["pr"] = str((curves_dir / "pr.png").relative_to(root))

        fprs, pros = ranked.pro_curve()
        limit = metrics.AUPRO_FPR_LIMIT
        keep = fprs <= limit
        # the curve's vertices sit at anomalous scores only: draw it on to the limit, as integrated
        xs = np.r_[fprs[keep], limit]
        ys = np.r_[pros[keep], np.interp(limit, fprs, pros)]
        fig, ax = _figure()
        ax.plot(*_thin(xs, ys))
        ax.set(xlabel="false-positive rate", ylabel="per-region overlap", title="PRO curve (test part, FPR ≤ 0.3)")
        fig.savefig(curves_dir / "pro.png")
        out["pro"] = str((curves_dir / "pro.png").relative_to(root))
    try:
        thr, ious = IoUCurve().curve(val_maps, val_masks)
        fig, ax = _figure()
        ax.plot(thr, ious)
        for k, (name, t) in enumerate(thresholds.items()):
            ax.axvline(t, ls="--", lw=0.8, label=name, color=f"C{k + 1}")
        ax.set_xlim(thr[0], max(float(np.quantile(val_maps, 0.999)), *thresholds.values(), thr[0] + 1e-6))
        ax.legend(fontsize=7)
        ax.set(xlabel="threshold", ylabel="mean IoU (anomalous images)", title="IoU vs threshold (validation)")
        fig.savefig(curves_dir / "iou_vs_threshold.png")
        out["iou_vs_threshold"] = str((curves_dir / "iou_vs_threshold.png").relative_to(root))
    except ThresholdError:
        pass
    return out


def save_few_shot_chart(curves_dir: Path, few_shot) -> dict:
    """'Anomalous images labelled -> expected test IoU' per technique (the few-shot study), as a PNG."""
    curves_dir.mkdir(parents=True, exist_ok=True)
    fig, ax = _figure()
    drawn = False
    for k, curve in enumerate(few_shot.curves):
        pts = [p for p in curve.points if p.iou_mean is not None]
        if not pts:
            continue
        drawn = True
        n = np.array([p.n_anomalous for p in pts], dtype=float)
        mean = np.array([p.iou_mean for p in pts])
        if curve.needs_anomalous:
            ax.fill_between(n, [p.iou_low for p in pts], [p.iou_high for p in pts], color=f"C{k}", alpha=0.15)
            ax.plot(n, mean, "o-", color=f"C{k}", label=curve.technique, ms=3)
        else:  # label-free: the same threshold whatever n is
            ax.plot(n, mean, "--", color=f"C{k}", label=f"{curve.technique} (no labels needed)")
    if not drawn:
        return {}
    ax.set_xscale("symlog", linthresh=1)
    ticks = [0, *few_shot.n_values]
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.set(xlabel="anomalous validation images the threshold is fitted on",
           ylabel="test IoU (mean, 95 % of draws)", title="How many anomalous images are needed?")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = curves_dir / "few_shot.png"
    fig.savefig(path)
    return {"few_shot": str(path.relative_to(curves_dir.parent))}
