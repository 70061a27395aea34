"""Nearest defect-free image of each query image in a backbone's feature space (no Django).

Each image is described by its deepest backbone feature map, average-pooled over a 4x4 grid
(so the position of parts matters, not only their presence) and L2-normalised; the distance
is the Euclidean distance between descriptors. Used to show an annotator the defect-free
image most like the one being labelled.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .backbones import Backbone, BackboneWeightsError
from .data import load_image

GRID = 4


def descriptors(backbone: Backbone, paths: Sequence[str], image_size: int = 224, batch_size: int = 16,
                step: Callable[[int], None] | None = None) -> np.ndarray:
    out = []
    for start in range(0, len(paths), batch_size):
        batch = np.stack([load_image(p, image_size) for p in paths[start:start + batch_size]])
        feats = backbone(torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2))))[-1]
        pooled = F.adaptive_avg_pool2d(feats.float(), GRID).flatten(1)
        out.append(F.normalize(pooled, dim=1).cpu().numpy())
        if step:
            step(min(start + batch_size, len(paths)))
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def nearest_references(references: Sequence[str], queries: Sequence[str], backbone: str = "tf_efficientnet_lite0",
                       image_size: int = 224, device: str = "cpu") -> tuple[list[tuple[int, float]], str]:
    """For each query path: (index into ``references``, distance); and the weights used.

    Pretrained weights when present, else random ones (still a fair pixel-structure match);
    the second value says which.
    """
    if not references:
        return [], ""
    try:
        net = Backbone(backbone, weights="pretrained", device=device)
    except BackboneWeightsError:
        net = Backbone(backbone, weights="random", device=device)
    ref = descriptors(net, references, image_size)
    qry = descriptors(net, queries, image_size)
    if not len(qry):
        return [], net.weights_source
    d = np.sqrt(np.maximum(((qry[:, None, :] - ref[None, :, :]) ** 2).sum(-1), 0.0))
    best = d.argmin(1)
    return [(int(i), float(d[n, i])) for n, i in enumerate(best)], net.weights_source
