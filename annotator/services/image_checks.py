"""Check that image and mask files are what a dataset import needs, before anything is written.

Plain Pillow/NumPy (no Django): every file is read once; the SHA-256 comes from the same bytes
that are verified and decoded. Problems come back as messages, never as exceptions.
"""
from __future__ import annotations

import hashlib
import io
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from PIL import Image as PILImage
from PIL import ImageFile

from inference.engine.pixels import (
    MASK_THRESHOLD,
    QUARTER_TURNS,
    DecodeError,
    decode_image,
    decode_mask,
    exif_orientation,
)

# Truncated files must fail, never be padded with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False


class CheckError(Exception):
    """One problem with one file; the message does not name the file."""


@dataclass(frozen=True)
class CheckedFile:
    width: int
    height: int
    checksum: str  # SHA-256 of the file
    orientation: int = 1  # EXIF orientation (already applied to width and height)


@contextmanager
def pillow_limits(max_pixels: int):
    """Pillow's own decompression-bomb limit set to ``max_pixels``, its warning made an error.

    Process-wide state: enter it once around a batch (``check_many`` does), not per thread.
    """
    previous = PILImage.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error", PILImage.DecompressionBombWarning)
        PILImage.MAX_IMAGE_PIXELS = max_pixels
        try:
            yield
        finally:
            PILImage.MAX_IMAGE_PIXELS = previous


def _readable(source):
    """What Pillow opens ``source`` from: bytes, a path, or a binary file (Pillow reads it from its
    start, a chunk at a time: an upload in a temporary file is never read whole into memory)."""
    return io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source


@contextmanager
def _reasons():
    """Any failure to read an image as a CheckError with a readable reason."""
    try:
        yield
    except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning) as error:
        raise CheckError(f"refused as a possible decompression bomb ({error})") from None
    except CheckError:
        raise
    except DecodeError as error:
        raise CheckError(str(error)) from None
    except PILImage.UnidentifiedImageError:
        raise CheckError("not a readable image (unknown or corrupt image format)") from None
    except Exception as error:  # noqa: BLE001 - any decoder failure means unreadable
        reason = str(error) or type(error).__name__
        raise CheckError(f"not a readable image ({reason})") from None


def probe_image(source, max_pixels: int, *, verify: bool = True) -> tuple[int, int]:
    """The declared (width, height) of an image file (bytes, path or binary file), checked
    against ``max_pixels`` without decoding a single pixel; ``verify``: Pillow's structure check
    too (it reads a PNG chunk whole into memory, so a caller holding only a file for a large
    upload leaves it to the decode, which reads a block at a time and fails on damage too)."""
    with _reasons(), PILImage.open(_readable(source)) as probe:
        width, height = probe.size
        if width * height > max_pixels:
            raise CheckError(_bomb_message(width, height, max_pixels))
        if verify:
            probe.verify()
    return width, height


def _open_checked(source, max_pixels: int, *, mask: bool = False, name: str = "",
                  threshold: float = MASK_THRESHOLD, orientation: int = 1, verify: bool = True):
    """Verify (see :func:`probe_image`) and fully decode ``source`` (bytes, path or binary file)
    with the shared decoding (``inference.engine.pixels``): the RGB picture, or for ``mask`` the
    DecodedMask; raise CheckError with a readable reason.

    The declared size is checked against ``max_pixels`` before a single pixel is decoded, so
    the limit holds even outside ``pillow_limits``.
    """
    probe_image(source, max_pixels, verify=verify)
    with _reasons():
        if mask:
            return decode_mask(source, threshold=threshold, orientation=orientation, name=name)
        return decode_image(source)


def _bomb_message(width: int, height: int, max_pixels: int) -> str:
    return (
        f"refused as a possible decompression bomb: {width}x{height} = {width * height:,} pixels, "
        f"more than the limit of {max_pixels:,}"
    )


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise CheckError(f"cannot be read ({error.strerror or error})") from None


def _orientation(data: bytes) -> int:
    try:
        with PILImage.open(io.BytesIO(data)) as picture:
            return exif_orientation(picture)
    except Exception:  # noqa: BLE001 - a header problem shows on decode
        return 1


def check_image(path: Path, *, max_pixels: int, known: CheckedFile | None = None,
                decode: bool = True) -> CheckedFile:
    """Size (upright, after EXIF orientation) and checksum of a readable image; ``known`` (an
    earlier check of the same file) skips the decode when the checksum still matches.
    ``decode=False``: the header and Pillow's structure check only, for a caller that decodes
    every image itself right after and reports a damaged one by its path (the benchmark CLI)."""
    data = _read(path)
    checksum = hashlib.sha256(data).hexdigest()
    if known is not None and known.checksum == checksum and known.width * known.height <= max_pixels:
        return CheckedFile(known.width, known.height, checksum, _orientation(data))
    if not decode:
        width, height = probe_image(data, max_pixels)
        orientation = _orientation(data)
        if orientation in QUARTER_TURNS:
            width, height = height, width
        return CheckedFile(width, height, checksum, orientation)
    picture = _open_checked(data, max_pixels)
    width, height = picture.size
    picture.close()
    return CheckedFile(width, height, checksum, _orientation(data))


@dataclass(frozen=True)
class CheckedMask:
    width: int
    height: int
    checksum: str
    rule: str  # the mask rule applied (inference.engine.pixels.MASK_RULES)
    lossy: bool  # JPEG mask
    defect_pixels: int


def check_mask(path: Path, *, max_pixels: int, image_size: tuple[int, int] | None,
               threshold: float = MASK_THRESHOLD, orientation: int = 1) -> CheckedMask:
    """A mask must decode by one of the mask rules and have its image's (upright) size.

    An empty mask is not an error here: whether it is one depends on the layout (the importer).
    """
    data = _read(path)
    checksum = hashlib.sha256(data).hexdigest()
    decoded = _open_checked(data, max_pixels, mask=True, name=path.name,
                            threshold=threshold, orientation=orientation)
    height, width = decoded.defect.shape
    if image_size is not None and (width, height) != tuple(image_size):
        raise CheckError(f"mask {width}x{height} but image {image_size[0]}x{image_size[1]}")
    return CheckedMask(width, height, checksum, decoded.rule, decoded.lossy, decoded.defect_pixels)


@dataclass(frozen=True)
class PairResult:
    image: CheckedFile | None
    mask: CheckedMask | None
    errors: tuple[str, ...]


def check_pair(image_path: Path, mask_path: Path | None, *, max_pixels: int,
               image_label: str, mask_label: str | None,
               known: CheckedFile | None = None,
               threshold: float = MASK_THRESHOLD, decode_images: bool = True) -> PairResult:
    """Check an image and (when given) its mask; messages are prefixed with the given labels."""
    errors = []
    image = mask = None
    try:
        image = check_image(image_path, max_pixels=max_pixels, known=known, decode=decode_images)
    except CheckError as error:
        errors.append(f"{image_label}: {error}")
    if mask_path is not None:
        try:
            mask = check_mask(
                mask_path, max_pixels=max_pixels,
                image_size=(image.width, image.height) if image else None,
                threshold=threshold, orientation=image.orientation if image else 1,
            )
        except CheckError as error:
            errors.append(f"{mask_label}: {error}")
    return PairResult(image, mask, tuple(errors))


def check_many(
    jobs: Iterable[tuple[Path, Path | None, str, str | None]],
    *,
    max_pixels: int,
    progress: Callable[[int, int], None] | None = None,
    workers: int | None = None,
    known: dict[str, CheckedFile | None] | None = None,
    threshold: float = MASK_THRESHOLD,
    decode_images: bool = True,
) -> list[PairResult]:
    """``check_pair`` over (image, mask, image label, mask label) jobs, in order, on a thread pool.

    ``known`` maps str(image path) to an earlier check of it (see ``check_image``);
    ``decode_images=False``: images by header and structure only (masks are always decoded:
    their defect pixels decide anomaly).

    Pillow's decoders and hashlib release the GIL, so threads use several cores without the
    start-up cost of processes.
    """
    jobs = list(jobs)
    total = len(jobs)
    workers = workers or min(4, os.cpu_count() or 1)
    results: list[PairResult] = []

    def run(job):
        image_path, mask_path, image_label, mask_label = job
        return check_pair(image_path, mask_path, max_pixels=max_pixels,
                          image_label=image_label, mask_label=mask_label,
                          known=(known or {}).get(str(image_path)), threshold=threshold,
                          decode_images=decode_images)

    if progress:
        progress(0, total)
    with pillow_limits(max_pixels), ThreadPoolExecutor(max_workers=workers) as pool:
        for done, result in enumerate(pool.map(run, jobs), start=1):
            results.append(result)
            if progress:
                progress(done, total)
    return results
