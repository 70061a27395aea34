"""``run_benchmark``: the protocol, end to end, returning the report as plain JSON.

Protocol
--------
1. The model is fitted on ``train`` (defect-free images only).
2. ``test`` (good and anomalous) is split into a validation part and a test part,
   stratified by defect type and seeded (:func:`split.split_validation_test`; with two
   anomalous images or more, each part gets at least one). CFLOW's early stopping, every
   threshold, the image threshold and the choice of technique use the validation part only.
3. The recommended technique is chosen by cross-fitting inside the validation part
   (:func:`evaluation.cross_fitted_selection`): each technique is fitted on some folds and
   scored on the held-out one. (The in-sample validation IoU would always favour ``f1``,
   which maximises pooled Dice on exactly those pixels.) Every technique is then fitted on the
   whole validation part and measured on the test part, with 95 % bootstrap intervals.
4. Threshold-free metrics (image and pixel AUROC, AUPRO, AUPIMO) are reported on the whole test
   folder (comparable with published numbers) and, with intervals, on the test part, AUPIMO
   also per image; at every technique's threshold the defect regions found (and, per size
   class, detected) and the false alarms per defect-free test image are counted
   (:mod:`.regions`); breakdowns per defect
   type, category and background measure each subset's own anomalous test images; the
   few-shot study measures the test IoU with only n anomalous validation images; ``repeats``
   repeats steps 2-4 on other seeds. The report's structure: :mod:`.report`.

Anomalous images without a mask (``Sample.mask_path`` None) are image-level evidence: image AUROC,
the image threshold and decision use every anomalous image; every pixel number (pixel AUROC,
AUPRO, AUPIMO, the techniques' IoU/Dice/precision/recall, regions, defect sizes, the few-shot
study, the curves) and every threshold fit use only the images with pixels to score: the
defect-free ones and the anomalous ones with a mask (``report.MaskCoverage``). Without a masked
anomalous validation image the techniques that need labelled defects are skipped with that
reason; the label-free ones still run and one of them is recommended.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from . import metrics
from .backbones import Backbone
from . import decision_intervals, evaluation, label_uncertainty, pimo, regions, registry, synthetic
from .common import RunPeakMemory, seed_everything
from .data import load_canvas_masks, load_image, load_native, make_input_loader, native_sizes
from .geometry import Preprocessing, area_resample_mask, evaluation_canvas, geometry_problem, resize_map
from .report import (
    PIXEL_METRICS,
    SCHEMA_VERSION,
    AupimoDistribution,
    BenchmarkReport,
    Bootstrap,
    Breakdowns,
    Comparability,
    Estimate,
    FitFailure,
    ImageDecision,
    MaskCoverage,
    MeanSpread,
    PerImage,
    Repeats,
    Segmentation,
    Split,
    SubsetReport,
    TechniqueResult,
    ThresholdFree,
    Timing,
)
from .split import split_problems, split_summary, split_validation_test
from .thresholds import NEEDS_ANOMALOUS, TECHNIQUES, ThresholdError
from .types import MAX_REPEATS, BenchmarkCancelled, BenchmarkConfig, Sample

CATEGORIES = ("structural", "surface", "contamination", "combined")

# Share of the overall progress given to each stage (sums to 1).
# Synthetic defects made per defect-free image for the ``synthetic`` technique (a few each, so
# the IoU curve's mean over defects is not one draw's luck).
SYNTHETIC_PER_IMAGE = 3
_STAGES = {"setup": 0.03, "fit": 0.5, "inference": 0.22, "metrics": 0.2, "artifacts": 0.05}


class _Progress:
    """Maps (stage, fraction of stage) to a monotone overall fraction and checks cancellation.

    ``detail(stage, done, total, unit, **extra)`` reports the sub-steps of a stage (images
    done, CFLOW's epoch and losses) to the ``on_detail`` callback, with the stage's measured
    speed (``rate``, units per second since the stage's first sub-step) and the time left at
    that speed (``eta_seconds``).
    """

    def __init__(self, callback, should_cancel, stages: dict[str, float], on_detail=None):
        self.callback = callback
        self.should_cancel = should_cancel
        self.on_detail = on_detail
        self.starts: dict[str, float] = {}
        acc = 0.0
        for name, w in stages.items():
            self.starts[name] = acc
            acc += w
        self.weights = stages
        self.last = 0.0
        self.stage_clock: dict[str, tuple[float, float]] = {}  # stage -> (time, done) of its first sub-step

    def check_cancel(self) -> None:
        if self.should_cancel is not None and self.should_cancel():
            raise BenchmarkCancelled("benchmark cancelled")

    def __call__(self, stage: str, frac: float) -> None:
        self.check_cancel()
        overall = self.starts[stage] + self.weights[stage] * min(max(frac, 0.0), 1.0)
        overall = max(self.last, min(overall, 1.0))
        self.last = overall
        if self.callback is not None:
            self.callback(stage, overall)

    def detail(self, stage: str, done: int, total: int, unit: str, clock: str | None = None, **extra) -> None:
        if self.on_detail is None:
            return
        key = clock or stage
        now = time.perf_counter()
        t0, d0 = self.stage_clock.setdefault(key, (now, done))
        rate = (done - d0) / (now - t0) if now > t0 and done > d0 else None
        eta = (total - done) / rate if rate else None
        self.on_detail({"stage": stage, "done": int(done), "total": int(total), "unit": unit,
                        "rate": rate, "eta_seconds": eta, **extra})

    def finish(self) -> None:
        self.last = 1.0
        if self.callback is not None:
            self.callback("done", 1.0)


def build_model(config: BenchmarkConfig, backbone: Backbone):
    """A new model of ``config.model`` (any name in :data:`registry.MODELS`)."""
    return registry.build(config, backbone)


def _validate(train: Sequence[Sample], test: Sequence[Sample], config: BenchmarkConfig) -> None:
    registry.get(config.model)  # unknown names are refused with the list of models
    if not train:
        raise ValueError("no training images")
    if not test:
        raise ValueError("no test images")
    bad = [s.report_key for s in train if s.defect_type != "good"]
    if bad:
        raise ValueError(f"training images must be defect-free; got anomalous: {bad[:3]}")
    unknown = [t for t in config.techniques if t not in TECHNIQUES]
    if unknown:
        raise ValueError(f"unknown threshold techniques {unknown}; known: {sorted(TECHNIQUES)}")
    keys = [s.report_key for s in test]
    if len(set(keys)) != len(keys):
        raise ValueError("test sample keys must be unique")
    if not 1 <= int(config.repeats) <= MAX_REPEATS:
        raise ValueError(f"repeats must be between 1 and {MAX_REPEATS}, got {config.repeats}")
    problems = split_problems(test)
    if problems:
        raise ValueError("the test images cannot be split into validation and test parts: " + " ".join(problems))


def run_benchmark(
    train: list[Sample],
    test: list[Sample],
    config: BenchmarkConfig,
    progress: Callable[[str, float], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    artifacts_dir: str | Path | None = None,
    save_model: Callable[[object, dict], None] | None = None,
    on_detail: Callable[[dict], None] | None = None,
) -> dict:
    """Fit ``config.model`` on ``train``, evaluate on ``test``; see the module docstring.

    ``progress(stage, overall_fraction)`` is called throughout; ``on_detail(dict)`` (optional)
    with each stage's sub-steps, speed and time left (see :class:`_Progress`).
    ``save_model(model, report)``, when given, is called with the fitted model (of the reported
    split) and the finished report before the model is dropped (e.g. :func:`package.save_package`).
    """
    old_threads = torch.get_num_threads()
    if config.num_threads:
        torch.set_num_threads(int(config.num_threads))
    try:
        return _run(train, test, config, progress, should_cancel, artifacts_dir, save_model, on_detail)
    finally:
        torch.set_num_threads(old_threads)


def _map_inputs(model, loader, owner, n_images, assemble, on_image) -> None:
    """Run ``model`` over every input of ``loader`` (input k belongs to image ``owner[k]``, inputs
    of an image consecutive); ``assemble(i, maps, scores)`` makes image i's map and score once all
    its inputs are mapped, and ``on_image(i, map, score)`` receives them."""
    pending_maps: list[np.ndarray] = []
    pending_scores: list[float] = []
    current = None
    for images, idx in loader:
        m, sc = model.anomaly_maps(images)
        for k, amap, score in zip(idx.tolist(), m, sc):
            i = owner[k]
            if current is not None and i != current:
                on_image(current, *assemble(current, pending_maps, pending_scores))
                pending_maps, pending_scores = [], []
            current = i
            pending_maps.append(amap)
            pending_scores.append(float(score))
    if current is not None:
        on_image(current, *assemble(current, pending_maps, pending_scores))


def _fit_and_map(model, train, test, val_idx, labels, syn_images, config, prog, fit_share, geo) -> dict:
    """Fit ``model`` (CFLOW's early stopping on the defect-free validation images only), then map
    every test-folder image and every synthetic image, each independently, onto the evaluation
    canvas ``geo["canvas"]`` (:mod:`.geometry`)."""
    prep, canvas = geo["prep"], geo["canvas"]
    t_fit = time.perf_counter()
    train_loader = make_input_loader(train, prep, geo["train_sizes"], config.batch_size, config.num_workers)
    lo, width = fit_share
    val_loader = None
    if registry.get(config.model).uses_validation:
        val_pos = [i for i in val_idx if not labels[i]]
        val_loader = (make_input_loader([test[i] for i in val_pos], prep, [geo["test_sizes"][i] for i in val_pos],
                                        config.batch_size, config.num_workers) if val_pos else None)
    n_train = len(train)
    # Models whose training loop reports its own steps (CFLOW's epochs and losses) say so in ``detail``;
    # the others are measured in training images.
    own_detail = "detail" in inspect.signature(model.fit).parameters
    kwargs = {}
    if own_detail:
        kwargs["detail"] = lambda d: prog.detail("fit", d["steps_done"], d["steps_total"], "steps",
                                                 clock=f"fit{lo}", **d)

    def fit_step(fraction):
        if not own_detail:
            prog.detail("fit", round(fraction * n_train), n_train, "images", clock=f"fit{lo}")
        prog("fit", lo + width * fraction)

    model.fit(train_loader, val_loader, step=fit_step, **kwargs)
    fit_seconds = time.perf_counter() - t_fit

    t_inf = time.perf_counter()
    maps = np.empty((len(test), *canvas), dtype=np.float32)
    scores = np.empty(len(test), dtype=np.float64)
    total = len(test) + (len(syn_images) if syn_images is not None else 0)
    done = 0

    def store(into_maps, into_scores):
        def on_image(i, amap, score):
            nonlocal done
            into_maps[i] = resize_map(amap, canvas)
            into_scores[i] = score
            done += 1
            prog.detail("inference", done, total, "images", clock=f"inference{lo}")
            prog("inference", lo + width * done / total)
        return on_image

    loader = make_input_loader(test, prep, geo["test_sizes"], config.batch_size, config.num_workers)
    _map_inputs(model, loader, loader.dataset.owner, len(test),
                lambda i, m, sc: prep.assemble(m, sc, geo["test_sizes"][i]), store(maps, scores))
    inference_seconds = time.perf_counter() - t_inf
    syn_maps = None
    if syn_images is not None and len(syn_images):
        syn_maps = np.empty((len(syn_images), *canvas), dtype=np.float32)
        syn_scores = np.empty(len(syn_images), dtype=np.float64)
        syn_prep = prep
        inputs = [syn_prep.inputs(im) for im in syn_images]
        flat = np.stack([x for xs in inputs for x in xs])
        owner = [i for i, xs in enumerate(inputs) for _ in xs]
        chunks = ((torch.from_numpy(np.ascontiguousarray(flat[a:a + config.batch_size].transpose(0, 3, 1, 2))),
                   torch.arange(a, min(a + config.batch_size, len(flat))))
                  for a in range(0, len(flat), config.batch_size))
        _map_inputs(model, chunks, owner, len(syn_images),
                    lambda i, m, sc: syn_prep.assemble(m, sc, syn_images.shape[1:3]), store(syn_maps, syn_scores))
    return {"maps": maps, "scores": scores, "synthetic_maps": syn_maps, "fit_seconds": fit_seconds,
            "inference_seconds": inference_seconds}


def _technique_results(val: evaluation.ValidationData, maps, masks, labels, ti, config, resampler,
                       unmasked_validation: int = 0):
    """Every technique fitted on the whole validation part, measured on the test part (with
    ``resampler``, the reported split: intervals, decision intervals and region counts too).
    ``val`` and ``ti`` hold the images with pixels to score only; ``unmasked_validation``: the
    validation part's anomalous images left out of ``val`` for having no mask."""
    thresholds: dict[str, float] = {}
    results: dict[str, TechniqueResult] = {}
    test_counts: dict[str, evaluation.PixelCounts] = {}
    region_counts: dict[str, regions.RegionCounts] = {}
    defect_regions = regions.DefectRegions(masks[ti]) if resampler is not None else None
    all_val = np.arange(len(val.maps))
    good_pixels = np.sort(val.maps[~val.anomalous].ravel()) if (~val.anomalous).any() else None
    for name in config.techniques:
        if name in NEEDS_ANOMALOUS and unmasked_validation and not val.anomalous.any():
            results[name] = TechniqueResult(name, None, FitFailure(
                "no_masked_anomalous_validation_images",
                f"needs masks: threshold technique {name!r} fits on anomalous validation images with a mask, "
                f"and none of the validation part's {unmasked_validation} anomalous image(s) has one"), None, None)
            continue
        try:
            thr = val.fit(name, all_val, config.normal_fpr_target)
        except ThresholdError as exc:
            results[name] = TechniqueResult(name, None, evaluation.failure_of(exc), None, None)
            continue
        thresholds[name] = thr
        v = evaluation.PixelCounts.at(val.maps, val.masks, thr)
        c = evaluation.PixelCounts.at(maps[ti], masks[ti], thr)
        test_counts[name] = c
        test = (evaluation.segmentation_estimates(c, labels[ti], resampler) if resampler is not None else None)
        pct = (100.0 * np.searchsorted(good_pixels, thr, side="right") / good_pixels.size
               if good_pixels is not None else None)
        validation = evaluation.segmentation(v, val.anomalous)
        if not val.anomalous.any():
            validation = _without_defect_pixels(validation)
        if test is not None and not labels[ti].any():
            test = _without_defect_pixels(test)
        results[name] = TechniqueResult(name, thr, None, validation, test, threshold_percentile=pct)
        if defect_regions is not None:
            region_counts[name] = defect_regions.at(maps[ti], thr)
            results[name].regions = regions.region_detection(region_counts[name], labels[ti], resampler)
    if resampler is not None:  # the reported split: intervals of the procedure, thresholds refitted
        decisions = decision_intervals.decision_estimates(
            val, thresholds, maps[ti], masks[ti], resampler.weights,
            {k: r.test.iou.value for k, r in results.items() if r.test is not None},
            config.normal_fpr_target, config.seed)
        for name, decision in decisions.items():
            results[name].decision = decision
    return thresholds, results, test_counts, region_counts


# Undefined without a defect pixel to find (0 / false positives would read as a measured 0).
_DEFECT_PIXEL_METRICS = ("iou", "dice", "precision", "recall", "mean_image_iou")


def _without_defect_pixels(segmentation):
    """``segmentation`` (or its estimates) of images none of which is anomalous with a mask: the
    numbers about defect pixels are None (``needs masks`` on the pages); the false-positive ones stay."""
    from dataclasses import replace

    empty = Estimate(None) if isinstance(segmentation.iou, Estimate) else None
    return replace(segmentation, **{k: empty for k in _DEFECT_PIXEL_METRICS})


def _image_decision(scores, labels, vi, ti, resampler) -> ImageDecision:
    try:
        thr = evaluation.fit_image_threshold(scores[vi], labels[vi])
    except ThresholdError as exc:
        return ImageDecision(evaluation.IMAGE_RULE, None, evaluation.failure_of(exc), None, None)
    test = (evaluation.image_estimates(scores[ti], labels[ti], thr, resampler) if resampler is not None else None)
    good_validation = [float(scores[i]) for i in vi if not labels[i]]
    return ImageDecision(evaluation.IMAGE_RULE, thr, None,
                         evaluation.image_classification(scores[vi], labels[vi], thr), test, good_validation)


def threshold_free_mixed(maps, masks, labels, scores, idx, pixel) -> dict:
    """``metrics.threshold_free`` of images ``idx``: image AUROC over all of them, the pixel
    metrics over those with pixels to score (``pixel``: defect-free, or anomalous with a mask)."""
    idx = np.asarray(idx, dtype=int)
    scored = idx[pixel[idx]]
    out = metrics.threshold_free(maps[scored], masks[scored], labels[scored], scores=scores[scored])
    if len(scored) != len(idx):
        out["image_auroc"] = metrics.image_auroc(scores[idx], labels[idx])
    return out


def _breakdowns(test, vi, ti, maps, masks, labels, test_counts, scores=None, technique=None,
                seed=0, pixel=None) -> Breakdowns:
    """Per defect type, category and background value (see :class:`report.SubsetReport`).
    ``scores``: the model's image scores (default: the maximum of each map); ``technique`` (the
    chosen one) and ``seed``: the interval the vote-weighted numbers are held against
    (:mod:`.label_uncertainty`); ``pixel``: the images with pixels to score (default: all), whose
    positions in ``ti`` the ``test_counts`` follow."""
    scores = metrics.image_scores(maps) if scores is None else scores
    pixel = np.ones(len(test), bool) if pixel is None else pixel
    good_all = [i for i in range(len(test)) if not labels[i]]
    good_test = [i for i in ti if not labels[i]]
    val_set = set(vi)
    pos_in_test = {i: n for n, i in enumerate(i for i in ti if pixel[i])}
    anomalous_test = [int(i) for i in ti if labels[i] and pixel[i]]
    voters = [test[i] for i in anomalous_test]
    voter_row = {i: n for n, i in enumerate(anomalous_test)}
    voter_counts = {name: c.take([pos_in_test[i] for i in anomalous_test]) for name, c in test_counts.items()}

    def report(pred, dimension=None, value=None) -> SubsetReport:
        members = [i for i in range(len(test)) if labels[i] and pred(test[i])]
        in_test = [i for i in members if i not in val_set]
        whole = sorted(good_all + members)
        entry_tf = None
        segmentation: dict[str, Segmentation | None] = {}
        note = ""
        if in_test:
            idx = sorted(good_test + in_test)
            entry_tf = ThresholdFree(**threshold_free_mixed(maps, masks, labels, scores, idx, pixel))
            rows = [pos_in_test[i] for i in in_test if pixel[i]]
            for name, c in test_counts.items():
                segmentation[name] = (evaluation.segmentation(c.take(rows), np.ones(len(rows), bool))
                                      if rows else None)
            if not rows:
                note = f"needs masks: none of its {len(in_test)} anomalous test image(s) has a mask"
        elif members:
            note = f"all {len(members)} anomalous image(s) of this subset are in the validation part"
        else:
            note = "no image has this as its final label; only some annotators' votes put images here"
        uncertainty = None
        if dimension is not None and any(label_uncertainty.is_disputed(s) for s in voters):
            uncertainty = label_uncertainty.label_uncertainty(
                voters, dimension, value, voter_counts, [voter_row[i] for i in in_test if i in voter_row], technique, seed)
        return SubsetReport(
            n_anomalous_test=len(in_test), n_anomalous_validation=len(members) - len(in_test),
            threshold_free=entry_tf, whole_folder=ThresholdFree(**threshold_free_mixed(maps, masks, labels, scores, whole, pixel)),
            segmentation=segmentation, note=note, label_uncertainty=uncertainty,
        )

    anomalous = [test[i] for i in range(len(test)) if labels[i]]
    by_type = {dt: report(lambda s, dt=dt: s.defect_type == dt) for dt in sorted({s.defect_type for s in anomalous})}
    # a value only some annotators chose still gets its row: its numbers exist only by their votes
    cats = {s.category for s in anomalous if s.category is not None} | label_uncertainty.voted_values(anomalous, "category")
    by_cat = {c: report(lambda s, c=c: s.category == c, "category", c)
              for c in [c for c in CATEGORIES if c in cats] + sorted(cats - set(CATEGORIES))}
    backgrounds = {s.background for s in anomalous} | label_uncertainty.voted_values(anomalous, "background")
    by_bg = {str(b): report(lambda s, b=b: s.background is b, "background", b)
             for b in (True, False) if b in backgrounds}
    return Breakdowns(by_type, by_cat, by_bg)


def _evaluate(test, maps, scores, masks, labels, syn, config, seed, full: bool, prog=None, pixel=None) -> dict:
    """The protocol's evaluation of one validation/test split of the computed maps.

    ``full``: with bootstrap intervals, few-shot study and breakdowns (the reported split);
    without (the extra splits of ``repeats``): point values only. ``pixel``: the images with
    pixels to score (defect-free, or anomalous with a mask; default all): every pixel number and
    threshold fit uses only them (``pv``, ``pt``), the image-level ones every image (``vi``, ``ti``).
    """
    step = (lambda f: prog("metrics", f)) if (prog is not None and full) else (lambda f: None)
    pixel = np.ones(len(test), bool) if pixel is None else pixel
    val_idx, test_idx = split_validation_test(test, config.val_fraction, seed)
    vi, ti = np.array(val_idx, dtype=int), np.array(test_idx, dtype=int)
    pv, pt = vi[pixel[vi]], ti[pixel[ti]]
    syn_kwargs = {}
    if syn is not None:
        syn_maps, syn_masks, syn_source = syn
        pos_in_val = {int(i): n for n, i in enumerate(pv)}
        keep = np.array([int(s) in pos_in_val for s in syn_source], dtype=bool)
        syn_kwargs = dict(synthetic_maps=syn_maps[keep], synthetic_masks=syn_masks[keep],
                          synthetic_source=np.array([pos_in_val[int(s)] for s in syn_source[keep]], dtype=int))
    val = evaluation.ValidationData(maps[pv], masks[pv], labels[pv], normal_sigma_k=config.normal_sigma_k, **syn_kwargs)
    keys = [test[i].report_key for i in pv]
    resampler = evaluation.Resampler(labels[ti], seed) if full else None
    # the same draw as before masks could be missing when every image has pixels to score
    pixel_resampler = (resampler if len(pt) == len(ti) else evaluation.Resampler(labels[pt], seed)) if full else None
    thresholds, techniques, test_counts, region_counts = _technique_results(
        val, maps, masks, labels, pt, config, pixel_resampler, unmasked_validation=len(vi) - len(pv))
    step(0.2)
    selection = evaluation.cross_fitted_selection(val, keys, config.techniques, config.normal_fpr_target, seed)
    if selection.chosen is None:  # nothing could be cross-fitted: a rule fixed in advance
        fitted = [k for k, r in techniques.items() if r.failure is None]
        selection.chosen, selection.rule = evaluation.fallback_choice(fitted)
    step(0.35)
    decision = _image_decision(scores, labels, vi, ti, resampler)
    out = {"val_idx": val_idx, "test_idx": test_idx, "vi": vi, "ti": ti, "pv": pv, "pt": pt, "thresholds": thresholds,
           "techniques": techniques, "test_counts": test_counts, "region_counts": region_counts, "selection": selection,
           "image_decision": decision, "scores": scores}
    if not full:
        out["test_part"] = threshold_free_mixed(maps, masks, labels, scores, ti, pixel)
        return out
    out["overlap"] = pimo.PerImageOverlap(maps[pt], masks[pt], labels[pt])
    out["test_part"] = evaluation.threshold_free_estimates(maps[pt], masks[pt], labels[pt], pixel_resampler, scores[pt],
                                                           overlap=out["overlap"])
    if len(pt) != len(ti):  # image AUROC over every test image, the anomalous ones without a mask too
        out["test_part"].image_auroc = resampler.estimate(
            metrics.image_auroc(scores[ti], labels[ti]),
            evaluation.image_auroc_resamples(scores[ti], labels[ti], resampler.weights))
    step(0.55)
    out["few_shot"] = evaluation.few_shot_study(val, maps[pt], masks[pt], config.techniques,
                                                config.normal_fpr_target, seed)
    step(0.7)
    out["breakdowns"] = _breakdowns(test, val_idx, test_idx, maps, masks, labels, test_counts, scores,
                                    technique=selection.chosen, seed=seed, pixel=pixel)
    step(1.0)
    return out


def _mask_coverage(labels, pixel, vi, ti) -> MaskCoverage:
    def count(idx, with_mask):
        return int(sum(1 for i in idx if labels[i] and pixel[i] == with_mask))

    unmasked = count(vi, False) + count(ti, False)
    return MaskCoverage(
        test_with_mask=count(ti, True), test_image_level_only=count(ti, False),
        validation_with_mask=count(vi, True), validation_image_level_only=count(vi, False),
        needs_masks=list(PIXEL_METRICS) if unmasked else [])


def _aupimo_distribution(overlap: pimo.PerImageOverlap) -> AupimoDistribution:
    return AupimoDistribution(fpr_low=overlap.bounds[0], fpr_high=overlap.bounds[1],
                              n_images=0 if overlap.note else len(overlap.scored), **overlap.quantiles(),
                              note=overlap.note)


def _repeat_metrics(ev: dict) -> dict[str, float | None]:
    """The numbers a repeated split is summarised by (mean and spread over the splits)."""
    tp = ev["test_part"]
    row = {f"test_part.{k}": (v.value if isinstance(v, Estimate) else v)
           for k, v in (tp.items() if isinstance(tp, dict) else vars(tp).items())}
    for name, r in ev["techniques"].items():
        c = ev["test_counts"].get(name)
        row[f"techniques.{name}.iou"] = (evaluation.segmentation_stats(c, c.pos > 0)["iou"] if c else None)
    chosen = ev["selection"].chosen
    row["chosen_technique.iou"] = row.get(f"techniques.{chosen}.iou") if chosen else None
    d = ev["image_decision"]
    if d.threshold is not None:
        stats = evaluation.image_stats(ev["scores"][ev["ti"]], ev["labels_ti"], d.threshold)
        row["image_decision.accuracy"] = stats["accuracy"]
    return {k: (float(v) if v is not None and np.isfinite(v) else None) for k, v in row.items()}


def _resized(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    if image.shape[:2] == tuple(shape):
        return image
    return np.asarray(Image.fromarray(image).resize((shape[1], shape[0]), Image.BILINEAR), dtype=np.uint8)


def _geometry(train, test, config) -> dict:
    """The run's preprocessing, the images' native sizes and the evaluation canvas; a model that
    cannot work with this geometry is refused with the reason (:func:`geometry.geometry_problem`)."""
    prep = Preprocessing.from_config(config)
    train_sizes, test_sizes = native_sizes(train), native_sizes(test)
    spec = registry.get(config.model)
    problem = geometry_problem(prep, spec.position_specific, spec.label, train_sizes + test_sizes)
    if problem:
        raise ValueError(problem)
    canvas = evaluation_canvas(test_sizes, int(config.eval_max_pixels))
    return {"prep": prep, "train_sizes": train_sizes, "test_sizes": test_sizes, "canvas": canvas}


def _run(train, test, config: BenchmarkConfig, progress, should_cancel, artifacts_dir, save_model=None,
         on_detail=None) -> dict:
    t_start = time.perf_counter()
    _validate(train, test, config)
    memory = RunPeakMemory().start()
    try:
        return _run_measured(train, test, config, progress, should_cancel, artifacts_dir, on_detail,
                             t_start, memory, save_model)
    finally:
        memory.__exit__()


def _run_measured(train, test, config, progress, should_cancel, artifacts_dir, on_detail, t_start, memory,
                  save_model=None) -> dict:
    prog = _Progress(progress, should_cancel, _STAGES, on_detail)
    prog("setup", 0.0)
    seed_everything(config.seed)
    on_cuda = str(config.device).startswith("cuda") or (config.device == "auto" and torch.cuda.is_available())
    if on_cuda:
        torch.cuda.reset_peak_memory_stats()
    repeats = max(1, int(config.repeats))
    seeds = [config.seed + r for r in range(repeats)]
    labels = np.array([s.is_anomalous for s in test], dtype=bool)  # the dataset's word, never the resized mask
    # pixels to score: a defect-free image, or an anomalous one with a mask (without: image-level only)
    pixel = ~labels | np.array([s.mask_path is not None for s in test], dtype=bool)
    val_idx, test_idx = split_validation_test(test, config.val_fraction, config.seed)
    layers = registry.backbone_layers(config)
    backbone = Backbone(
        config.backbone, layers=layers, weights="pretrained" if config.pretrained else "random",
        weights_path=config.weights_path, device=config.device,
    )
    size = config.image_size
    geo = _geometry(train, test, config)
    canvas = geo["canvas"]
    syn_images = syn_masks = syn_source = None
    if "synthetic" in config.techniques:
        good = [i for i in range(len(test)) if not labels[i]]
        if good:
            # squash: made on the model's input as before (comparable numbers); the other modes: on
            # the evaluation canvas, then through the run's own preprocessing
            if geo["prep"].resize == "squash":
                base = np.stack([load_image(test[i].image_path, size) for i in good])
            else:
                base = np.stack([_resized(load_native(test[i].image_path), canvas) for i in good])
            syn_images, syn_masks, source, _ = synthetic.synthetic_defects(base, config.seed, SYNTHETIC_PER_IMAGE)
            syn_masks = np.stack([area_resample_mask(m, canvas) for m in syn_masks])
            syn_source = np.array(good, dtype=int)[source]
    prog("setup", 1.0)

    # ---- fit + maps. A model that looks at validation images while fitting (CFLOW's early
    # stopping) is refitted for every repeated split; the others are split-independent.
    refit = registry.get(config.model).uses_validation
    fits = repeats if refit else 1
    mapped = []
    for r in range(fits):
        seed_everything(seeds[r])
        model = build_model(config, backbone)
        vi_r = split_validation_test(test, config.val_fraction, seeds[r])[0] if r else val_idx
        mapped.append(_fit_and_map(model, train, test, vi_r, labels, syn_images, config, prog, (r / fits, 1 / fits),
                                  geo))
        if r == 0:
            model_memory_mb = model.memory_bytes() / 2**20
            model_info = model.describe() if hasattr(model, "describe") else {}
            kept = model if save_model is not None else None
        del model
    del backbone
    cuda_peak_mb = torch.cuda.max_memory_allocated() / 2**20 if on_cuda else None
    first = mapped[0]
    maps = first["maps"]

    # ---- evaluation ----------------------------------------------------------------------------
    t_eval = time.perf_counter()
    masks = load_canvas_masks(test, canvas)
    syn = (first["synthetic_maps"], syn_masks, syn_source) if first["synthetic_maps"] is not None else None
    ev = _evaluate(test, maps, first["scores"], masks, labels, syn, config, config.seed, full=True, prog=prog,
                   pixel=pixel)
    vi, ti = ev["vi"], ev["ti"]
    repeat_block = None
    if repeats > 1:
        rows, chosen = [], []
        for r, seed in enumerate(seeds):
            if r == 0:
                e = ev
            else:
                m = mapped[r if refit else 0]
                s = (m["synthetic_maps"], syn_masks, syn_source) if m["synthetic_maps"] is not None else None
                e = _evaluate(test, m["maps"], m["scores"], masks, labels, s, config, seed, full=False, pixel=pixel)
            e["labels_ti"] = labels[e["ti"]]
            rows.append(_repeat_metrics(e))
            chosen.append(e["selection"].chosen)
        names = sorted({k for row in rows for k in row})
        repeat_block = Repeats(
            seeds=seeds, chosen=chosen,
            metrics={k: MeanSpread(*evaluation.mean_spread([row.get(k) for row in rows])) for k in names},
            note=("the model was refitted for every split (its early stopping uses validation images)" if refit
                  else "one fitted model; only the validation/test split changes"),
        )
    evaluation_seconds = time.perf_counter() - t_eval

    # ---- per image + artifacts ------------------------------------------------------------------
    thresholds = ev["thresholds"]
    recommended = ev["selection"].chosen
    art_tech = recommended if recommended in thresholds else next(iter(thresholds), None)
    art_thr = thresholds.get(art_tech) if art_tech else None
    scores = ev["scores"]
    decision = ev["image_decision"]
    curves = {}
    colour_scale = None
    if artifacts_dir is not None:
        from .artifacts import save_curves, save_few_shot_chart

        adir = Path(artifacts_dir)
        # colour scale shared by all overlays: validation scores' 1st..99.9th percentile
        lo, hi = (float(v) for v in np.percentile(maps[vi] if len(vi) else maps, [1, 99.9]))
        colour_scale = {"low": lo, "high": hi}
        pt, pv = ev["pt"], ev["pv"]
        curves = save_curves(adir / "curves", maps[pt], masks[pt], maps[pv], masks[pv], thresholds)
        curves.update(save_few_shot_chart(adir / "curves", ev["few_shot"]))
    per_image = []
    aupimo_values = ev["overlap"].values()
    pos_scored = {int(i): n for n, i in enumerate(ev["pt"])}  # the pixel numbers' rows
    for n, i in enumerate(ti):
        s = test[i]
        p = pos_scored.get(int(i))
        entry = PerImage(
            key=s.report_key, defect_type=s.defect_type, category=s.category, background=s.background,
            anomalous=bool(labels[i]), score=float(scores[i]),
            predicted_anomalous=bool(scores[i] >= decision.threshold) if decision.threshold is not None else None,
            iou={name: (metrics.per_image_iou(maps[i], masks[i], thresholds[name])
                        if name in thresholds and p is not None else None) for name in config.techniques},
            counts=({name: [int(c.tp[p]), int(c.fp[p]), int(c.pos[p] - c.tp[p])]
                     for name, c in ev["test_counts"].items()} if p is not None else {}),
            artifacts=None, aupimo=aupimo_values[p] if p is not None else None,
            regions={name: c.per_image(p) for name, c in ev["region_counts"].items()} if p is not None else {},
            has_mask=p is not None,
        )
        if artifacts_dir is not None:
            from .artifacts import save_image_artifacts

            thr = art_thr if art_thr is not None else float(np.inf)
            entry.artifacts = save_image_artifacts(
                Path(artifacts_dir) / "images", f"{n:04d}", s.image_path, maps[i], thr, lo, hi, size,
                truth=masks[i] if labels[i] else None)
            prog.detail("artifacts", n + 1, len(ti), "images")
            prog("artifacts", (n + 1) / len(ti))
        per_image.append(entry)

    # an image without a mask is other evidence than the same image with one (pixel numbers);
    # fully masked test parts keep the digest they always had
    test_entries = [(test[i].report_key, test[i].defect_type, test[i].category, test[i].background)
                    + (() if pixel[i] else ("no mask",)) for i in ti]
    run_peak_mb = memory.stop()
    device = str(torch.device(config.device) if config.device != "auto"
                 else ("cuda" if torch.cuda.is_available() else "cpu"))
    report = BenchmarkReport(
        schema_version=SCHEMA_VERSION,
        config=config.to_dict(),
        device=device,
        threads=torch.get_num_threads(),
        model_info=model_info,
        split=Split(val_fraction=config.val_fraction, seed=config.seed,
                    **split_summary(test, ev["val_idx"], ev["test_idx"])),
        comparability=Comparability(
            test_images_digest=evaluation.test_images_digest(test_entries), image_size=size,
            backbone=config.backbone, seed=config.seed, val_fraction=config.val_fraction),
        whole_folder=ThresholdFree(**threshold_free_mixed(maps, masks, labels, first["scores"],
                                                          np.arange(len(test)), pixel)),
        test_part=ev["test_part"],
        aupimo=_aupimo_distribution(ev["overlap"]),
        techniques=ev["techniques"],
        selection=ev["selection"],
        recommended_technique=recommended,
        image_decision=decision,
        few_shot=ev["few_shot"],
        breakdowns=ev["breakdowns"],
        bootstrap=Bootstrap(resamples=evaluation.RESAMPLES, seed=config.seed, confidence=evaluation.CONFIDENCE,
                            method="percentile bootstrap over test images, resampled within the anomalous and "
                                   "the defect-free images separately"),
        repeats=repeat_block,
        per_image=per_image,
        artifact_technique=art_tech,
        curves=curves,
        timing=Timing(
            fit_seconds=first["fit_seconds"],
            inference_ms_per_image=1000.0 * first["inference_seconds"] / len(test),
            evaluation_seconds=evaluation_seconds,
            total_seconds=time.perf_counter() - t_start,
        ),
        # peak RSS of this run (not of the process: see RunPeakMemory) + CUDA peak allocated
        # during this run when on GPU
        peak_memory_mb=run_peak_mb + (cuda_peak_mb or 0.0),
        peak_rss_mb=run_peak_mb,
        cuda_peak_memory_mb=cuda_peak_mb,
        model_memory_mb=model_memory_mb,
        n_train=len(train),
        n_test=len(test),
        source={},
        colour_scale=colour_scale,
        masks=_mask_coverage(labels, pixel, vi, ti),
    )
    out = report.to_json()
    if kept is not None:
        save_model(kept, out)
        del kept
    prog.finish()
    return out
