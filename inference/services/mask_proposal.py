"""A model's proposal for an image's defect mask, which the mask editor starts from.

The model is the product's deployed one (its threshold technique), else the fitted model of the
product's newest succeeded run that kept a package (the run's chosen threshold technique). Its
anomaly map is brought to the image's own upright size (bilinear, as the evaluation scales maps
to its canvas) and cut at the package's pixel threshold: a binary mask of exactly the image's
size, with its connected regions (8-connectivity: count, area in pixels, box). Nothing is stored:
the editor gets the mask as a PNG inside the JSON answer and the user accepts or corrects it.
"""
from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field

import numpy as np
from django.conf import settings

from annotator.models import Image
from annotator.paths import servable_file
from inference.models import ProductRun, Status
from inference.services import deploy
from inference.services.reports import TECHNIQUE_LABELS


class NoProposal(Exception):
    """No model can propose a mask for this image; the message says why (shown in the editor)."""


@dataclass(frozen=True)
class Region:
    area: int  # pixels at the image's size
    bbox: tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 exclusive)

    def to_json(self) -> dict:
        return {"area": self.area, "bbox": list(self.bbox)}


@dataclass
class Proposal:
    mask: np.ndarray = field(repr=False)  # bool (height, width), upright
    model: str
    run_id: int
    technique: str
    pixel_threshold: float
    deployed: bool
    regions: list[Region]

    @property
    def source(self) -> str:
        """One line naming the model, stored with a mask saved from the proposal."""
        how = "deployed" if self.deployed else "fitted"
        label = TECHNIQUE_LABELS.get(self.technique, self.technique)
        return f"{self.model} ({how}, run {self.run_id}), {label} threshold {self.pixel_threshold:.4g}"

    def png(self) -> bytes:
        from PIL import Image as PILImage

        out = io.BytesIO()
        PILImage.fromarray(self.mask.astype(np.uint8) * 255, "L").save(out, format="PNG")
        return out.getvalue()

    def to_json(self) -> dict:
        return {
            "available": True,
            "source": self.source,
            "model": self.model,
            "run": self.run_id,
            "deployed": self.deployed,
            "technique": self.technique,
            "pixelThreshold": self.pixel_threshold,
            "width": int(self.mask.shape[1]),
            "height": int(self.mask.shape[0]),
            "defectPixels": int(np.count_nonzero(self.mask)),
            "regions": [region.to_json() for region in self.regions],
            "maskPng": "data:image/png;base64," + base64.b64encode(self.png()).decode("ascii"),
        }


def proposing_run(product) -> tuple[ProductRun, str | None, bool]:
    """(the run whose package proposes, its technique or None for the run's chosen one, deployed?)."""
    deployment = deploy.current(product)
    if deployment is not None:
        return deployment.product_run, deployment.technique, True
    part = (ProductRun.objects.filter(product=product, status=Status.SUCCEEDED).exclude(package_path="")
            .select_related("run").order_by("-finished_at", "-id").first())
    if part is None:
        raise NoProposal(f"No model to propose a mask: {product.name} has no deployed model and no finished "
                         "benchmark run with a fitted model. Draw the mask yourself.")
    return part, None, False


def regions_of(mask: np.ndarray) -> list[Region]:
    """Connected regions (8-connectivity), largest first."""
    from scipy import ndimage

    labels, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=int))
    if count == 0:
        return []
    areas = np.bincount(labels.ravel(), minlength=count + 1)
    regions = [Region(int(areas[k]), (int(xs.start), int(ys.start), int(xs.stop), int(ys.stop)))
               for k, (ys, xs) in enumerate(ndimage.find_objects(labels), start=1)]
    return sorted(regions, key=lambda r: (-r.area, r.bbox))


def at_image_size(anomaly_map: np.ndarray, width: int, height: int) -> np.ndarray:
    """The anomaly map (float32) resized to width x height (bilinear); unchanged when it has that size."""
    if anomaly_map.shape == (height, width):
        return anomaly_map
    from PIL import Image as PILImage

    picture = PILImage.fromarray(np.ascontiguousarray(anomaly_map, dtype=np.float32), "F")
    return np.asarray(picture.resize((width, height), PILImage.Resampling.BILINEAR), dtype=np.float32)


def propose_mask(image: Image) -> Proposal:
    """The model's mask of ``image`` at its pixel threshold (see the module); NoProposal when no
    model can give one (none fitted, or its package cannot be loaded)."""
    from annotator.services.image_checks import pillow_limits
    from inference.engine.pixels import decode_image

    part, technique, deployed = proposing_run(image.product)
    try:
        inspector = deploy.inspector_of(part, what="deployed" if deployed else f"run {part.run_id}'s")
    except deploy.DeployRefused as error:
        raise NoProposal(str(error)) from None
    with pillow_limits(settings.DEFECTBENCH_MAX_IMAGE_PIXELS):
        picture = decode_image(servable_file(image.product.dataset.root, image.path))
    width, height = picture.size
    result = inspector.inspect([picture], names=[str(image.pk)], technique=technique)[0]
    del picture
    mask = at_image_size(result.anomaly_map, width, height) >= result.pixel_threshold
    return Proposal(mask=mask, model=inspector.model_name, run_id=part.run_id, technique=result.technique,
                    pixel_threshold=float(result.pixel_threshold), deployed=deployed, regions=regions_of(mask))
