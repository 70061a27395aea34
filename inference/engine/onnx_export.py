"""ONNX export of a model package whose maps are a fixed graph (PaDiM).

The exported graph takes a batch of images as uint8 ``(B, 3, S, S)`` (RGB, already resized to the
package's size ``S`` as the manifest's preprocessing says) and returns ``anomaly_map``
``(B, S, S)`` float32 and ``image_score`` ``(B,)`` (the map maximum). It holds the normalisation,
the backbone up to its deepest used layer, the channel subset, the Mahalanobis distance (constant folding stores
the inverse covariances unpacked: the file is ~160 MB at 256 px and 100 features, and nothing is
unpacked per call), the bilinear upsampling and the Gaussian blur: the same operations as :meth:`padim.Padim.predict`, in one pass instead of
chunks. The thresholds, the preprocessing and the whole manifest are in the model's metadata
(``metadata_props``): ``defectbench.manifest`` (JSON), ``defectbench.image_threshold``,
``defectbench.pixel_threshold`` and ``defectbench.pixel_technique``, ``defectbench.preprocessing``.

CFLOW is not exported: its score is a float64 log-sum-exp over normalizing-flow log-likelihoods
with per-image shifts, which onnxruntime would run in float32 and so not reproduce.
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
# The graph below re-implements PaDiM's maps: the registry's models built on that class export.
EXPORTABLE = tuple(name for name in registry.MODELS if registry.get(name).cls == "Padim")


class PadimGraph(nn.Module):
    """:class:`padim.Padim` inference as one traceable module (batch of uint8 images -> maps, scores)."""

    def __init__(self, model):
        super().__init__()
        from .padim import BLUR_SIGMA

        backbone = model.backbone
        self.net = backbone.model
        self.register_buffer("scale", backbone._pixel_scale.detach().cpu().clone())
        self.register_buffer("shift", backbone._pixel_shift.detach().cpu().clone())
        self.layer_idx = [sel.cpu() for sel in model.layer_idx]
        self.register_buffer("mean", model.mean.detach().cpu().clone())
        self.register_buffer("inv_packed", model.inv_cov.detach().cpu().clone())
        self.register_buffer("gather", model.gather_idx.detach().cpu().clone())
        self.dim = model.dim
        self.grid = model.grid
        self.image_size = model.image_size
        self.sigma = BLUR_SIGMA

    def forward(self, images: torch.Tensor):
        x = images.float() * self.scale + self.shift
        feats = self.net(x)
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
        dist = dist.clamp_min(0).sqrt().reshape(-1, 1, self.grid[0], self.grid[1])
        maps = F.interpolate(dist, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        maps = gaussian_blur(maps, self.sigma)[:, 0]
        return maps, maps.flatten(1).amax(1)


def export_onnx(inspector: Inspector, output: str | Path, opset: int = OPSET) -> Path:
    """Write ``inspector``'s model as ONNX to ``output`` (thresholds and manifest in its metadata)."""
    import onnx

    name = inspector.model_name
    if name not in EXPORTABLE:
        raise PackageError(f"{name} packages cannot be exported to ONNX (only {', '.join(EXPORTABLE)}): its score "
                           "is a float64 log-sum-exp that an ONNX runtime would compute differently")
    model = inspector.model
    if model.backbone.device.type != "cpu":
        raise PackageError("load the package on the CPU to export it")
    graph = PadimGraph(model).eval()
    size = inspector.image_size
    example = torch.zeros(1, 3, size, size, dtype=torch.uint8)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    net = graph.net
    previous_format = next(net.parameters()).is_contiguous(memory_format=torch.channels_last)
    net.to(memory_format=torch.contiguous_format)  # plain NCHW weights in the graph
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
            torch.onnx.export(
                graph, (example,), str(output), dynamo=False, opset_version=opset,
                input_names=["images"], output_names=["anomaly_map", "image_score"],
                dynamic_axes={"images": {0: "batch"}, "anomaly_map": {0: "batch"}, "image_score": {0: "batch"}},
                do_constant_folding=True,
            )
    finally:
        if previous_format:
            net.to(memory_format=torch.channels_last)
    proto = onnx.load(str(output))
    technique, pixel_threshold = inspector.pixel_threshold()
    meta = {
        "defectbench.manifest": json.dumps(inspector.manifest),
        "defectbench.preprocessing": json.dumps({
            **inspector.manifest["preprocessing"],
            "graph_input": f"uint8 (batch, 3, {size}, {size}), RGB, channels first: resize first, the graph normalises",
        }),
        "defectbench.image_threshold": repr(float(inspector.thresholds["image"]["value"])),
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
