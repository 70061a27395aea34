"""The one decoding of image and mask files, shared by the importer, the display and the engine.

No Django here. Whatever shows a picture in the browser, checks it at import or feeds it to a
model goes through ``decode_image`` / ``decode_mask``, so all three see the same pixels.

Images: the EXIF orientation is applied (Pillow's ``ImageOps.exif_transpose``), then the picture
becomes 8-bit RGB: grayscale and palette pictures are expanded, an alpha channel is dropped,
16-bit (and 32-bit integer) grayscale is scaled from its full range 0..65535 to 0..255.

Masks become one boolean array (True = defect) by the first matching rule of ``MASK_RULES``;
``DecodedMask.rule`` says which one applied so an import can report how many masks needed a
conversion. A mask without EXIF orientation of its own gets its image's orientation, so image
and mask turn alike.
"""
from __future__ import annotations

import io
import os
import struct
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

# Grayscale masks with values between black and full scale: defect where value >= this share of
# full scale (255 for 8-bit, 65535 for 16-bit).
MASK_THRESHOLD = 0.5

# The mask rules, in the order they are tried: name -> what counts as defect. The one vocabulary
# of mask conversions (import summaries and the README take their wording from here).
MASK_RULES = {
    "binary": "two values, black and full scale (0/255, 0/65535, 1-bit): defect = full scale",
    "index": "grayscale whose largest value is below the threshold (0/1, index masks 0/1/2): "
             "defect = not zero",
    "threshold": "grayscale with values in between (anti-aliased or JPEG-noisy edges, 16-bit): "
                 "defect = value >= threshold x full scale (threshold 0.5 unless set)",
    "palette": "palette (mode P) masks: defect = palette colour not black (and not fully transparent)",
    "colour": "RGB/RGBA colour masks: defect = colour not black (and not fully transparent)",
}
# Mask file types whose edges are lossy; such masks import with a warning.
LOSSY_MASK_EXTENSIONS = (".jpg", ".jpeg")

_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")
# EXIF orientation -> the transpositions that undo it (as in Pillow's exif_transpose).
_ORIENTATION = {
    2: (Image.Transpose.FLIP_LEFT_RIGHT,),
    3: (Image.Transpose.ROTATE_180,),
    4: (Image.Transpose.FLIP_TOP_BOTTOM,),
    5: (Image.Transpose.TRANSPOSE,),
    6: (Image.Transpose.ROTATE_270,),
    7: (Image.Transpose.TRANSVERSE,),
    8: (Image.Transpose.ROTATE_90,),
}


class DecodeError(ValueError):
    """The file cannot become an image or a mask; the message does not name the file."""


@dataclass(frozen=True)
class DecodedMask:
    defect: np.ndarray  # bool HxW, True = defect
    rule: str  # a key of MASK_RULES
    lossy: bool  # a JPEG mask: its edges are lossy

    @property
    def defect_pixels(self) -> int:
        return int(np.count_nonzero(self.defect))


def _open(source) -> Image.Image:
    """Open a path, bytes or an open PIL image (returned as is)."""
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, (bytes, bytearray)):
        return Image.open(io.BytesIO(source))
    return Image.open(source)


def _png_exif_chunk(picture: Image.Image) -> bytes | None:
    """The eXIf chunk of a PNG not loaded yet, found by walking the chunk headers (no pixel is
    decompressed; the file position is restored)."""
    fp = picture.fp
    position = fp.tell()
    try:
        fp.seek(8)  # after the signature
        while True:
            head = fp.read(8)
            if len(head) < 8:
                return None
            length, kind = struct.unpack(">I4s", head)
            if kind == b"eXIf":
                return fp.read(length)
            if kind == b"IEND":
                return None
            fp.seek(length + 4, os.SEEK_CUR)  # data and CRC
    finally:
        fp.seek(position)


def exif_orientation(picture: Image.Image) -> int:
    """The picture's EXIF orientation (1 = none), the one ``ImageOps.exif_transpose`` applies.

    For a PNG Pillow's ``getexif`` decodes the whole image first (an eXIf chunk may follow the
    pixel data): 18 ms of a 900 x 900 bottle image, for a value that is almost always absent. The
    chunk is looked up by its header instead.
    """
    try:
        if picture.format == "PNG" and "exif" not in picture.info and getattr(picture, "fp", None) is not None:
            chunk = _png_exif_chunk(picture)
            if chunk is None:
                return 1
            exif = Image.Exif()
            exif.load(b"Exif\x00\x00" + chunk)
            return int(exif.get(0x0112, 1) or 1)
        return int(picture.getexif().get(0x0112, 1) or 1)
    except Exception:  # noqa: BLE001 - broken EXIF means no orientation
        return 1


def orientation_of(path) -> int:
    """The EXIF orientation of the image file at ``path`` (1 = none); reads only the header."""
    with Image.open(path) as picture:
        return exif_orientation(picture)


# EXIF orientations that turn the picture a quarter: upright, its width and height swap.
QUARTER_TURNS = (5, 6, 7, 8)


def upright_size(path) -> tuple[int, int]:
    """(width, height) of the image file at ``path`` as :func:`decode_image` returns it (EXIF
    orientation applied), from the header alone: no pixel is decoded."""
    with Image.open(path) as picture:
        width, height = picture.size
        return (height, width) if exif_orientation(picture) in QUARTER_TURNS else (width, height)


def _orient(picture: Image.Image, orientation: int) -> Image.Image:
    for method in _ORIENTATION.get(orientation, ()):
        picture = picture.transpose(method)
    return picture


def oriented(picture: Image.Image) -> Image.Image:
    """``picture`` turned by its own EXIF orientation (decoded)."""
    turned = ImageOps.exif_transpose(picture)
    if turned is None:  # Pillow < 9.4 returns None when in_place; keep the original then
        turned = picture
    turned.load()
    return turned


def to_rgb(picture: Image.Image) -> Image.Image:
    """8-bit RGB pixels of ``picture`` (see the module docstring)."""
    if picture.mode == "RGB":
        return picture
    if picture.mode in _SIXTEEN_BIT:
        return Image.fromarray(_eight_bit(picture)).convert("RGB")
    if picture.mode == "F":
        array = np.asarray(picture, dtype=np.float64)
        scale = 255.0 if array.size and array.max() <= 1.0 else 1.0
        return Image.fromarray(np.clip(array * scale, 0, 255).astype(np.uint8), "L").convert("RGB")
    return picture.convert("RGB")


def _eight_bit(picture: Image.Image) -> np.ndarray:
    """A 16- or 32-bit grayscale picture scaled from 0..65535 to uint8, a strip of rows at a time:
    the whole picture as uint32 would be four times the size of its 8-bit result, twice over."""
    width, height = picture.size
    out = np.empty((height, width), dtype=np.uint8)
    step = max(1, (1 << 20) // max(width, 1))
    for top in range(0, height, step):
        strip = np.asarray(picture.crop((0, top, width, min(top + step, height))), dtype=np.uint32)
        out[top:top + step] = np.clip((strip + 128) // 257, 0, 255)
    return out


def _file(source):
    """A binary file to decode ``source`` (a path, bytes or an open binary file) from; a path is
    opened here, and closed when the decoding is done."""
    if isinstance(source, (bytes, bytearray)):
        return nullcontext(io.BytesIO(source))
    if isinstance(source, (str, os.PathLike)):
        return open(source, "rb")
    return nullcontext(source)  # the caller's file: the caller closes it


def decode_image(source) -> Image.Image:
    """The RGB picture of an image file (path, bytes, an open binary file or a PIL image), turned
    upright.

    A file is decoded and turned in place: an upright RGB file costs one full-size picture and no
    copy of it (a 40-megapixel picture is 160 MB in Pillow's four bytes per RGB pixel). A PIL image
    given is left as it is.
    """
    try:
        if isinstance(source, Image.Image):
            return to_rgb(oriented(source))
        with _file(source) as handle:
            picture = Image.open(handle)
            ImageOps.exif_transpose(picture, in_place=True)  # loads the pixels; turns them when EXIF says so
            return to_rgb(picture)
    except DecodeError:
        raise
    except Exception as error:  # noqa: BLE001 - any decoder failure means unreadable
        raise DecodeError(f"not a readable image ({error or type(error).__name__})") from None


def _not_black(colours: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    defect = np.any(colours != 0, axis=-1)
    if alpha is not None:
        defect &= alpha != 0
    return defect


def mask_from_picture(picture: Image.Image, threshold: float = MASK_THRESHOLD) -> tuple[np.ndarray, str]:
    """(defect array, rule) of a decoded mask picture; DecodeError for modes no rule covers."""
    mode = picture.mode
    if mode == "1":
        return np.asarray(picture, dtype=bool), "binary"
    if mode in ("P", "PA"):
        rgba = np.asarray(picture.convert("RGBA"))
        has_alpha = mode == "PA" or "transparency" in picture.info
        return _not_black(rgba[..., :3], rgba[..., 3] if has_alpha else None), "palette"
    if mode in ("RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
        if mode == "RGBA":
            rgba = np.asarray(picture)
            return _not_black(rgba[..., :3], rgba[..., 3]), "colour"
        return _not_black(np.asarray(picture.convert("RGB")), None), "colour"
    if mode in ("L", "LA", *_SIXTEEN_BIT):
        alpha = None
        if mode == "LA":
            alpha = np.asarray(picture.getchannel("A"))
            picture = picture.getchannel("L")
        array = np.asarray(picture)
        full = 255 if array.dtype == np.uint8 else 65535
        top = int(array.max()) if array.size else 0
        if array.dtype == np.uint8:
            present = np.nonzero(np.bincount(array.ravel(), minlength=256))[0]
        else:
            present = np.unique(array)
        if top == 0 or (len(present) <= 2 and top == full):
            defect, rule = array == full, "binary"
        elif top < threshold * full:
            defect, rule = array != 0, "index"
        else:
            defect, rule = array >= threshold * full, "threshold"
        if alpha is not None:
            defect &= alpha != 0
        return defect, rule
    raise DecodeError(f"mask has pixel mode {mode}, which no mask rule covers")


def decode_mask(source, *, threshold: float = MASK_THRESHOLD, orientation: int = 1,
                name: str | None = None) -> DecodedMask:
    """The boolean defect mask of a mask file, turned upright.

    The mask's own EXIF orientation wins; without one, ``orientation`` (its image's) is applied.
    ``name`` (the file name) decides whether the mask is lossy; a path source names itself.
    """
    if name is None and isinstance(source, (str, Path)):
        name = str(source)
    try:
        with _open(source) as picture:
            own = exif_orientation(picture)
            picture.load()
            picture = _orient(picture, own if own != 1 else orientation)
            defect, rule = mask_from_picture(picture, threshold)
    except DecodeError:
        raise
    except Exception as error:  # noqa: BLE001
        raise DecodeError(f"not a readable image ({error or type(error).__name__})") from None
    lossy = bool(name) and Path(name).suffix.lower() in LOSSY_MASK_EXTENSIONS
    return DecodedMask(np.ascontiguousarray(defect, dtype=bool), rule, lossy)
