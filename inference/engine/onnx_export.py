"""ONNX export of a model package whose maps are a fixed graph: PaDiM, PatchCore, the feature
reconstruction model and FCDD (the registry's models without an ``onnx_refusal``).

The exported graph takes a batch of images as uint8 ``(B, 3, S, S)`` (RGB, already resized to the
package's size ``S`` as the manifest's preprocessing says) and returns ``anomaly_map``
``(B, S, S)`` float32 and ``image_score`` ``(B,)``, the model's own image score (the one the
package's image threshold applies to; the manifest's ``thresholds.image.score`` says which). Each
graph holds the normalisation, the backbone up to its deepest used layer, the model's own
computation, the bilinear upsampling and the Gaussian blur: the same operations as the model's
``anomaly_maps``, in one pass instead of chunks.

* PaDiM: the channel subset and the Mahalanobis distance (constant folding stores the inverse
  covariances unpacked: the file is ~160 MB at 256 px and 100 features); score = map maximum.
* PatchCore: the locally aware features, the distance of every patch to every memory-bank row as
  ``|x|^2 - 2 x.b + |b|^2`` (one MatMul) and its minimum over the bank (ReduceMin / ArgMin); the
  paper's reweighted image score in the graph too: the most anomalous patch (ArgMax), its nearest
  bank row's ``num_neighbors`` nearest rows (TopK), ``(1 - softmax(distances)_0) * s*``. The
  distance block is batch x patches x bank floats (8.8 MB per image at 256 px and a 1 % coreset).
* Feature reconstruction: the 3x3-averaged features on the stride-8 grid, standardised, the 1x1
  autoencoder and the squared error; score = map maximum.
* FCDD: the same standardised features, its convolutional head and the pseudo-Huber output;
  score = map maximum.

A ``tiles`` package (PatchCore, reconstruction: the position-free models) exports one graph for
images of any size: it takes uint8 ``(B, 3, H, W)`` at the image's own size (every image of a
batch the same size) and returns ``anomaly_map`` ``(B, H, W)`` at that size and ``image_score``
``(B,)``, the largest tile score, as the Inspector does. The tiling is in the graph
(:class:`TilesGraph`), in shape arithmetic that holds for every (H, W), not a fixed tile grid:
the scale (Pillow's bilinear filter as a matrix product per axis, built in the graph for the
given size), the tile starts (every stride, the last flush with the edge), the tiles gathered by
index (an index clamped at the edge pads an image smaller than one tile, as ``np.pad(edge)``),
each tile resized to the model's size, the model's graph on all tiles at once, the maps resized
back and summed into place by 0/1 placement matrices, divided by the tiles covering each pixel,
cut and resized to (H, W). onnxruntime matches the Inspector within 1e-4 of the map's maximum at
``scale`` 1. With ``scale`` != 1 the graph rounds the scaled image as Pillow's two-pass 8-bit
filter does, horizontal pass first; Pillow orders its passes otherwise on some shapes (tall
images), so a pixel may differ by one grey level and the map by ~1 % of its maximum. All tiles go
through the model in one pass: memory grows with the number of tiles (PatchCore: tiles x patches
x bank floats for the distances), unlike the Inspector, which blends ``batch_size`` tiles at a
time. A ``keep_aspect`` package still exports the fixed-size graph: letterbox first.

The thresholds, the preprocessing and the whole manifest are in the model's metadata
(``metadata_props``): ``defectbench.manifest`` (JSON), ``defectbench.image_threshold``,
``defectbench.image_score`` (how the score is computed), ``defectbench.pixel_threshold`` and
``defectbench.pixel_technique``, ``defectbench.preprocessing`` (the resize mode, for tiles the
``tile_size``, ``tile_overlap`` and ``scale``, and ``graph_input``: what the graph takes).

Models that cannot be exported say why in the refusal (the registry's ``onnx_refusal``): CFLOW's
float64 log-sum-exp, the attribution model's gradients.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import registry
from .common import gaussian_blur
from .package import Inspector, PackageError

OPSET = 17
# The registry says which models export (the others carry the reason they do not); GRAPHS holds
# the graph of each, by the model's class (model names live in the registry; a test keeps the two equal).
EXPORTABLE = tuple(name for name, spec in registry.MODELS.items() if not spec.onnx_refusal)


class ImageGraph(nn.Module):
    """What every exported graph shares: uint8 images -> the backbone's feature maps, and a grid of
    per-position values -> the upsampled, blurred anomaly map (as the models make theirs)."""

    def __init__(self, model, blur_sigma: float):
        super().__init__()
        backbone = model.backbone
        self.net = backbone.model
        self.register_buffer("scale", backbone._pixel_scale.detach().cpu().clone())
        self.register_buffer("shift", backbone._pixel_shift.detach().cpu().clone())
        self.image_size = model.image_size
        self.sigma = blur_sigma

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.net(images.float() * self.scale + self.shift)

    def to_map(self, grid_values: torch.Tensor) -> torch.Tensor:
        """(B, 1, h, w) -> anomaly maps (B, S, S)."""
        maps = F.interpolate(grid_values, size=(self.image_size, self.image_size), mode="bilinear",
                             align_corners=False)
        return gaussian_blur(maps, self.sigma)[:, 0]


class PadimGraph(ImageGraph):
    """:class:`padim.Padim` inference as one traceable module (batch of uint8 images -> maps, scores)."""

    def __init__(self, model):
        from .padim import BLUR_SIGMA

        super().__init__(model, BLUR_SIGMA)
        self.layer_idx = [sel.cpu() for sel in model.layer_idx]
        self.register_buffer("mean", model.mean.detach().cpu().clone())
        self.register_buffer("inv_packed", model.inv_cov.detach().cpu().clone())
        self.register_buffer("gather", model.gather_idx.detach().cpu().clone())
        self.dim = model.dim
        self.grid = model.grid

    def forward(self, images: torch.Tensor):
        feats = self.features(images)
        size = feats[0].shape[-2:]
        parts = []
        for f, sel in zip(feats, self.layer_idx):
            if len(sel) == 0:
                continue
            f = f.index_select(1, sel)
            if f.shape[-2:] != size:
                f = F.interpolate(f, size=size, mode="nearest")
            parts.append(f)
        emb = torch.cat(parts, dim=1).flatten(2).transpose(1, 2)  # (B, P, d)
        n_pos = self.mean.shape[0]
        inv = self.inv_packed.index_select(1, self.gather).reshape(n_pos, self.dim, self.dim)
        delta = (emb - self.mean.unsqueeze(0)).transpose(0, 1)  # (P, B, d)
        dist = (torch.matmul(delta, inv) * delta).sum(-1).transpose(0, 1)  # (B, P)
        maps = self.to_map(dist.clamp_min(0).sqrt().reshape(-1, 1, self.grid[0], self.grid[1]))
        return maps, maps.flatten(1).amax(1)


class PatchCoreGraph(ImageGraph):
    """:class:`patchcore.PatchCore` inference, nearest neighbours over the whole memory bank in the
    graph, and its reweighted image score (:meth:`patchcore.PatchCore._image_score`)."""

    def __init__(self, model):
        from .patchcore import BLUR_SIGMA

        super().__init__(model, BLUR_SIGMA)
        self.register_buffer("bank", model.bank.detach().cpu().float().clone())
        self.register_buffer("bank_sq", model.bank_sq.detach().cpu().float().clone())
        self.grid = model.grid
        self.neighbours = min(model.num_neighbors, int(model.bank.shape[0]))

    def squared_distances(self, x: torch.Tensor) -> torch.Tensor:
        """(..., d) -> squared distances (..., M) to every bank row, as the engine computes them."""
        return (x * x).sum(-1, keepdim=True) + self.bank_sq - 2.0 * torch.matmul(x, self.bank.t())

    def forward(self, images: torch.Tensor):
        from .patchcore import locally_aware_features

        emb = locally_aware_features(self.features(images)).flatten(2).transpose(1, 2)  # (B, P, d)
        nearest_sq, nearest_row = self.squared_distances(emb).min(dim=2)  # (B, P)
        dist = nearest_sq.clamp_min(0).sqrt()
        maps = self.to_map(dist.reshape(-1, 1, self.grid[0], self.grid[1]))
        return maps, self.image_score(emb, dist, nearest_row)

    def image_score(self, emb, dist, nearest_row):
        worst = dist.argmax(dim=1, keepdim=True)  # (B, 1): the most anomalous patch
        s_star = dist.gather(1, worst)[:, 0]
        if self.neighbours == 1:  # as the engine: the nearest distance itself
            return s_star
        anchor = self.bank.index_select(0, nearest_row.gather(1, worst)[:, 0])  # (B, d): m*
        _, support = self.squared_distances(anchor).topk(self.neighbours, dim=1, largest=False)  # m* first
        neighbours = self.bank.index_select(0, support.reshape(-1)).reshape(-1, self.neighbours, emb.shape[2])
        patch = emb.gather(1, worst.unsqueeze(2).expand(-1, 1, emb.shape[2]))  # (B, 1, d): m_test*
        d = (neighbours - patch).pow(2).sum(-1).sqrt()  # (B, k)
        return (1.0 - torch.softmax(d, dim=1)[:, 0]) * s_star


class ReconstructionGraph(ImageGraph):
    """:class:`reconstruction.FeatureReconstruction` inference (squared feature-reconstruction error)."""

    def __init__(self, model):
        from .reconstruction import BLUR_SIGMA

        super().__init__(model, BLUR_SIGMA)
        self.autoencoder = model.net
        self.grid_index = model.grid_index
        self.register_buffer("mean", model.mean.detach().cpu().view(1, -1, 1, 1).clone())
        self.register_buffer("std", model.std.detach().cpu().view(1, -1, 1, 1).clone())

    def forward(self, images: torch.Tensor):
        from .reconstruction import grid_features

        f = (grid_features(self.features(images), self.grid_index) - self.mean) / self.std
        maps = self.to_map(((self.autoencoder(f) - f) ** 2).sum(1, keepdim=True))
        return maps, maps.flatten(1).amax(1)


class FcddGraph(ImageGraph):
    """:class:`fcdd.Fcdd` inference (the pseudo-Huber output of its convolutional head)."""

    def __init__(self, model):
        from .fcdd import BLUR_SIGMA

        super().__init__(model, BLUR_SIGMA)
        self.head = model.net
        self.grid_index = model.grid_index
        self.register_buffer("mean", model.mean.detach().cpu().view(1, -1, 1, 1).clone())
        self.register_buffer("std", model.std.detach().cpu().view(1, -1, 1, 1).clone())

    def forward(self, images: torch.Tensor):
        from .fcdd import pseudo_huber
        from .reconstruction import grid_features

        f = (grid_features(self.features(images), self.grid_index) - self.mean) / self.std
        maps = self.to_map(pseudo_huber(self.head(f)))
        return maps, maps.flatten(1).amax(1)


GRAPHS = {"Padim": PadimGraph, "PatchCore": PatchCoreGraph, "FeatureReconstruction": ReconstructionGraph,
          "Fcdd": FcddGraph}


# ---- tiles: the package's preprocessing in the graph ------------------------------------------------

def pil_bilinear_weights(n_in, n_out) -> torch.Tensor:
    """(n_out, n_in) float32: the 1-D resampling Pillow's BILINEAR ``resize`` applies along one axis
    (its triangle filter widened by the reduction factor when shrinking, so it antialiases; the
    weights of each output pixel normalised to 1). ``n_in`` / ``n_out``: ints or 0-dim int64
    tensors (traced: the graph builds the matrix for the size it is given)."""
    n_in_f = torch.as_tensor(n_in).to(torch.float32)
    n_out_f = torch.as_tensor(n_out).to(torch.float32)
    scale = n_in_f / n_out_f
    widen = torch.clamp(scale, min=1.0)
    centre = (torch.arange(n_out).to(torch.float32) + 0.5) * scale
    source = torch.arange(n_in).to(torch.float32)
    weights = torch.clamp(1.0 - ((source[None, :] - centre[:, None] + 0.5) / widen).abs(), min=0.0)
    return weights / weights.sum(1, keepdim=True)


def _resize_uint8(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """(..., H, W) float holding uint8 values, resized as Pillow resizes an 8-bit image: the
    horizontal pass, rounded to 8 bits, then the vertical pass, rounded (``rows`` (h, H) and
    ``cols`` (w, W) from :func:`pil_bilinear_weights`)."""
    x = torch.floor(torch.matmul(x, cols.t()) + 0.5).clamp(0.0, 255.0)
    return torch.floor(torch.matmul(rows, x) + 0.5).clamp(0.0, 255.0)


def _resize_float(m: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """(..., H, W) float maps resized as :func:`geometry.resize_map` (Pillow, 32-bit float) does."""
    return torch.matmul(torch.matmul(rows, m), cols.t())


class TilesGraph(nn.Module):
    """A ``tiles`` package's preprocessing around its model's graph, for images of any size.

    The same steps as :meth:`geometry.Preprocessing.inputs` / ``assemble``, written with shape
    arithmetic so that one graph serves every (H, W): the image scaled by ``scale`` (Pillow's
    bilinear, as a matrix product per axis), tile starts every ``stride`` with the last one flush
    with the edge (``min(k * stride, L - t)``), the tiles gathered by index (an index clamped to
    the edge is the edge padding of an image smaller than one tile), each tile resized to the
    model's size, the model's maps resized back to the tile and placed with 0/1 placement
    matrices (``P_y @ mosaic @ P_x^T``: the sum over tiles), divided by how many tiles cover each
    pixel, cut to the scaled image and resized to the image's own size. Score: the largest tile
    score. Every image of one batch must have the same size.
    """

    def __init__(self, inner: ImageGraph, preprocessing):
        super().__init__()
        self.inner = inner
        self.tile = int(preprocessing.tile_size)
        self.size = int(preprocessing.image_size)
        self.scale = float(preprocessing.scale)
        self.stride = max(1, int(round(self.tile * (1.0 - preprocessing.tile_overlap))))
        if self.tile != self.size:  # fixed sizes: the matrices are constants of the graph
            self.register_buffer("tile_in", pil_bilinear_weights(self.tile, self.size))
            self.register_buffer("tile_out", pil_bilinear_weights(self.size, self.tile))

    def _axis(self, length: torch.Tensor):
        """Tile count n, gather index (n * t,) into an axis of ``length``, placement matrix (length, n * t)."""
        t = self.tile
        covered = torch.clamp(length, min=t)
        count = torch.div(covered - t + self.stride - 1, self.stride, rounding_mode="floor") + 1
        starts = torch.clamp(torch.arange(count) * self.stride, max=covered - t)
        index = (starts[:, None] + torch.arange(t)[None, :]).reshape(-1)
        placement = (torch.arange(length)[:, None] == index[None, :]).to(torch.float32)
        return count, torch.clamp(index, max=length - 1), placement

    def forward(self, images: torch.Tensor):
        shape = torch._shape_as_tensor(images)
        height, width = shape[2], shape[3]
        x = images.to(torch.float32)
        if self.scale != 1.0:
            rows_h = torch.clamp(torch.round(height.to(torch.float32) * self.scale), min=1).to(torch.int64)
            cols_w = torch.clamp(torch.round(width.to(torch.float32) * self.scale), min=1).to(torch.int64)
            x = _resize_uint8(x, pil_bilinear_weights(height, rows_h), pil_bilinear_weights(width, cols_w))
        else:
            rows_h, cols_w = height, width
        t = self.tile
        count_y, index_y, place_y = self._axis(rows_h)
        count_x, index_x, place_x = self._axis(cols_w)
        mosaic = x.index_select(2, index_y).index_select(3, index_x)  # (B, 3, ny * t, nx * t)
        tiles = mosaic.unflatten(2, (-1, t)).unflatten(4, (-1, t)).permute(0, 2, 4, 1, 3, 5)
        tiles = tiles.flatten(0, 2)  # (B * ny * nx, 3, t, t), row by row as Preprocessing.inputs
        if t != self.size:
            tiles = _resize_uint8(tiles, self.tile_in, self.tile_in)
        maps, scores = self.inner(tiles)  # (N, S, S), (N,)
        if t != self.size:
            maps = _resize_float(maps, self.tile_out, self.tile_out)
        # (sizes from the traced shape, not Python ints: the graph holds them for any image)
        maps = maps.reshape(shape[0], count_y, count_x, t, t).permute(0, 1, 3, 2, 4)
        maps = maps.reshape(shape[0], count_y * t, count_x * t)  # the mosaic of tile maps
        covering = place_y.sum(1)[:, None] * place_x.sum(1)[None, :]
        blended = torch.matmul(torch.matmul(place_y, maps), place_x.t()) / torch.clamp(covering, min=1.0)
        if self.scale != 1.0:
            blended = _resize_float(blended, pil_bilinear_weights(rows_h, height), pil_bilinear_weights(cols_w, width))
        return blended, scores.reshape(shape[0], -1).amax(1)


def export_onnx(inspector: Inspector, output: str | Path, opset: int = OPSET) -> Path:
    """Write ``inspector``'s model as ONNX to ``output`` (thresholds and manifest in its metadata)."""
    import onnx

    name = inspector.model_name
    if name not in EXPORTABLE:
        raise PackageError(f"{name} packages cannot be exported to ONNX: {registry.get(name).onnx_refusal} "
                           f"(exportable: {', '.join(EXPORTABLE)})")
    model = inspector.model
    if model.backbone.device.type != "cpu":
        raise PackageError("load the package on the CPU to export it")
    graph = GRAPHS[registry.get(name).cls](model).eval()
    size = inspector.image_size
    preprocessing = inspector.preprocessing
    tiles = preprocessing.resize == "tiles"
    if tiles:
        if registry.get(name).position_specific:  # fitting refuses this already (geometry_problem)
            raise PackageError(f"a {name} package in tiles mode cannot exist: {name} models each map position")
        graph = TilesGraph(graph, preprocessing).eval()
        # an example of more than one tile per axis, so the trace holds the general case
        example = torch.zeros(1, 3, preprocessing.tile_size + 7, 2 * preprocessing.tile_size + 3, dtype=torch.uint8)
        axes = {"images": {0: "batch", 2: "height", 3: "width"},
                "anomaly_map": {0: "batch", 1: "height", 2: "width"}, "image_score": {0: "batch"}}
        graph_input = ("uint8 (batch, 3, height, width) of any size, RGB, channels first, at the image's own "
                       "size: the graph scales, tiles, resizes, blends and returns the map at that size")
    else:
        example = torch.zeros(1, 3, size, size, dtype=torch.uint8)
        axes = {"images": {0: "batch"}, "anomaly_map": {0: "batch"}, "image_score": {0: "batch"}}
        graph_input = f"uint8 (batch, 3, {size}, {size}), RGB, channels first: resize first, the graph normalises"
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    net = model.backbone.model  # the graph's backbone
    previous_format = next(net.parameters()).is_contiguous(memory_format=torch.channels_last)
    net.to(memory_format=torch.contiguous_format)  # plain NCHW weights in the graph
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
            torch.onnx.export(
                graph, (example,), str(output), dynamo=False, opset_version=opset,
                input_names=["images"], output_names=["anomaly_map", "image_score"],
                dynamic_axes=axes,
                do_constant_folding=True,
            )
    except torch.onnx.OnnxExporterError as error:  # e.g. adaptive pooling between grids of no whole ratio
        raise PackageError(f"this {name} package cannot be exported to ONNX at {size} px: "
                           f"{str(error).splitlines()[0][:300]}") from error
    finally:
        if previous_format:
            net.to(memory_format=torch.channels_last)
    proto = onnx.load(str(output))
    technique, pixel_threshold = inspector.pixel_threshold()
    meta = {
        "defectbench.manifest": json.dumps(inspector.manifest),
        "defectbench.preprocessing": json.dumps({
            **inspector.manifest["preprocessing"],
            "graph_input": graph_input,
        }),
        "defectbench.image_threshold": repr(float(inspector.thresholds["image"]["value"])),
        "defectbench.image_score": inspector.image_score_rule,
        "defectbench.pixel_threshold": repr(float(pixel_threshold)),
        "defectbench.pixel_technique": technique,
        "defectbench.pixel_thresholds": json.dumps({k: v["value"] for k, v in inspector.thresholds["pixel"].items()}),
    }
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = (f"DefectBench {name} anomaly maps; image is defective when image_score >= "
                        f"{meta['defectbench.image_threshold']}; pixels >= {meta['defectbench.pixel_threshold']} "
                        f"({technique}) are the predicted defect")
    onnx.checker.check_model(proto)
    onnx.save(proto, str(output))
    return output
