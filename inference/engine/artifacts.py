"""Image and curve artifacts (PNG). Uses matplotlib's object API with the Agg canvas only,
so no global pyplot state / GUI backend is touched (safe inside a web worker)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from . import metrics
from .data import load_image


def _colormap(values01: np.ndarray) -> np.ndarray:
    from matplotlib import colormaps

    return (colormaps["jet"](values01)[..., :3] * 255).astype(np.uint8)


def save_image_artifacts(
    out_dir: Path, stem: str, image_path: str, amap: np.ndarray, threshold: float, lo: float, hi: float,
    image_size: int,
) -> dict:
    """Heat-map overlay and predicted mask for one image; returns paths relative to out_dir.parent."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rgb = load_image(image_path, image_size)
    norm = np.clip((amap - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(amap)
    heat = _colormap(norm)
    overlay = (0.55 * rgb + 0.45 * heat).astype(np.uint8)
    mask = ((amap >= threshold) * 255).astype(np.uint8)
    ov_path = out_dir / f"{stem}_overlay.png"
    mk_path = out_dir / f"{stem}_mask.png"
    Image.fromarray(overlay).save(ov_path)
    Image.fromarray(mask).save(mk_path)
    root = out_dir.parent
    return {"overlay": str(ov_path.relative_to(root)), "mask": str(mk_path.relative_to(root))}


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
