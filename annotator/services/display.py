"""Display copies of images and masks: resized once, cached on disk, served through login-checked views.

A 900x900 PNG should not travel at full size to fill a 450 px box, so the browser asks for a
bounded size and gets a cached, resized copy keyed by the file's checksum.
"""
import hashlib
from pathlib import Path

import numpy as np
from django.conf import settings
from PIL import Image as PILImage

from inference.engine.pixels import MASK_THRESHOLD, decode_image, decode_mask, orientation_of

from annotator.models import Image
from annotator.paths import servable_file, servable_mask


class UnreadableImage(Exception):
    """The file is no longer an image Pillow can read (corrupted or replaced after import)."""


# The only sizes the UI asks for; anything else is refused so the cache cannot be flooded.
DISPLAY_SIZES = (128, 256, 512, 1024)
CACHE_DIR_NAME = "display-cache"


def cache_dir() -> Path:
    return settings.VAR_DIR / CACHE_DIR_NAME


def display_file(image: Image, *, kind: str, size: int | None) -> Path:
    """Path of the PNG to send for ``image`` (``kind`` is "image" or "mask").

    Every copy comes from the shared decoding the engine uses (``inference.engine.pixels``): the
    image upright (EXIF orientation) as 8-bit RGB, the mask as the binary 0/255 mask the mask rule
    gives (with its image's orientation), so what a user sees is what a model is scored on.
    ``size`` None means full size; otherwise the picture fits in ``size``² (masks resized with
    nearest-neighbour so they stay binary, images with Lanczos). The stored path is resolved now
    and must still be a file inside the data roots (``UnsafeFile`` otherwise: a symlink or an
    edited path pointing elsewhere); ``UnreadableImage`` when the file cannot be decoded.
    """
    relative = image.path if kind == "image" else image.mask_path
    if not relative:
        raise FileNotFoundError(f"Image {image.pk} has no mask.")
    if size is not None and size not in DISPLAY_SIZES:
        raise ValueError(f"Display size must be one of {DISPLAY_SIZES}.")
    root = image.files_root
    source = servable_file(root, relative) if kind == "image" else servable_mask(root, image.path, relative)
    options = image.product.dataset.import_options
    # A mask's own time stamp: a mask redrawn from edited polygons (or edited in place) is shown anew.
    version = source.stat().st_mtime_ns if kind == "mask" else ""
    key = hashlib.sha256(
        f"{image.checksum}:{kind}:{source}:{version}:{size or 'full'}:{options.get('mask_threshold')}:v2".encode()
    ).hexdigest()[:32]
    target = cache_dir() / key[:2] / f"{key}.png"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        if kind == "mask":
            threshold = options.get("mask_threshold") or MASK_THRESHOLD
            image_file = servable_file(root, image.path)
            decoded = decode_mask(source, orientation=orientation_of(image_file), threshold=threshold)
            picture = PILImage.fromarray(decoded.defect.astype(np.uint8) * 255, "L")
        else:
            picture = decode_image(source)
        if size is not None:
            picture.thumbnail(
                (size, size),
                PILImage.Resampling.NEAREST if kind == "mask" else PILImage.Resampling.LANCZOS,
            )
    except (OSError, ValueError, PILImage.DecompressionBombError) as error:
        # UnidentifiedImageError is an OSError; truncated files raise OSError on load.
        raise UnreadableImage(f"{relative} is not a readable image ({type(error).__name__}).") from None
    # Write then rename so a concurrent reader never sees a half-written file.
    partial = target.with_suffix(f".{id(picture)}.tmp")
    picture.save(partial, format="PNG", optimize=False)
    partial.replace(target)
    return target
