"""Anomalous images without a mask (as an import that accepts them leaves them), and what the
mask tests compare: PNG bytes of a mask, and a folder's files with their sizes and times."""
import hashlib
import io
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from annotator.models import Dataset, Image, Product


def make_maskless_images(root: Path, *, count: int = 1, size=(60, 40), name: str = "parts") -> list[Image]:
    """A dataset at ``root`` (inside the data roots) with ``count`` anomalous test images of
    ``size`` (width, height) and no mask, written as Image rows directly; one defect-free
    training image beside them."""
    rng = np.random.default_rng(0)
    width, height = size
    folder = root / "test" / "scratch"
    folder.mkdir(parents=True, exist_ok=True)
    (root / "train" / "good").mkdir(parents=True, exist_ok=True)
    dataset = Dataset.objects.create(name=name, layout=Dataset.Layout.FOLDER, root=str(root.resolve()))
    product = Product.objects.create(dataset=dataset, name=name)
    images = []
    for index in range(count + 1):
        pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        anomalous = index < count
        relative = f"test/scratch/{index:03d}.png" if anomalous else "train/good/000.png"
        PILImage.fromarray(pixels).save(root / relative)
        image = Image.objects.create(
            product=product, split=Image.Split.TEST if anomalous else Image.Split.TRAIN, is_anomalous=anomalous,
            defect_type="scratch" if anomalous else "good", path=relative, mask_path="", width=width, height=height,
            checksum=hashlib.sha256((root / relative).read_bytes()).hexdigest())
        if anomalous:
            images.append(image)
    return images


def mask_png(defect: np.ndarray, *, mode: str = "L") -> bytes:
    """``defect`` (bool height x width) as a PNG: white on black (``mode`` "L" or "RGBA")."""
    values = defect.astype(np.uint8) * 255
    if mode == "RGBA":
        picture = PILImage.fromarray(np.dstack([values, values, values, np.full_like(values, 255)]), "RGBA")
    else:
        picture = PILImage.fromarray(values, "L")
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return out.getvalue()


def folder_state(root: Path) -> list[tuple]:
    """Every file and folder under ``root`` with its size and modification time (ns)."""
    return sorted((p.relative_to(root).as_posix(), p.is_dir(), p.stat().st_size if p.is_file() else 0,
                   p.stat().st_mtime_ns) for p in [root, *root.rglob("*")])


def read_mask(path: Path) -> np.ndarray:
    with PILImage.open(path) as picture:
        return np.asarray(picture.convert("L")) > 127


def give_mask(image: Image, user, *, box=(10, 12, 30, 40), defect: np.ndarray | None = None):
    """Save a mask for ``image`` as the mask editor does (``save_drawn_mask``, drawn on an empty
    canvas): ``defect`` (bool, the image's upright height x width), else the ``box`` (x0, y0, x1, y1)."""
    from annotator.services.masks import Start, save_drawn_mask

    image = Image.objects.select_related("product__dataset").get(pk=image.pk)
    if defect is None:
        defect = np.zeros((image.height, image.width), bool)
        x0, y0, x1, y1 = box
        defect[y0:y1, x0:x1] = True
    return save_drawn_mask(image=image, user=user, png=mask_png(defect), start=Start("empty"), changed=True)
