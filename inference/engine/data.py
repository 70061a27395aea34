"""Image loading for the engine (the validation/test split lives in :mod:`.split`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from .pixels import decode_image, decode_mask, orientation_of, upright_size
from .types import Sample


class ImageLoadError(RuntimeError):
    """An image or mask file could not be read; the message names the file."""


def load_image(path: str, image_size: int) -> np.ndarray:
    """RGB image (decoded by :func:`pixels.decode_image`, as the display shows it) resized
    (bilinear) to ``image_size``², as uint8 HxWx3.

    Pixels stay uint8 until the backbone normalises them (:meth:`Backbone.forward`):
    a batch of them is a quarter of its float32 size.
    """
    try:
        im = decode_image(path)
        arr = np.asarray(im.resize((image_size, image_size), Image.BILINEAR), dtype=np.uint8)
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, ...)
        raise ImageLoadError(f"cannot read image file {path!r}: {exc}") from exc
    return arr


def load_mask(path: str | None, image_size: int, image_path: str | None = None) -> np.ndarray:
    """Binary mask (:func:`pixels.decode_mask`, nearest resize) as bool HxW; all False when
    ``path`` is None. ``image_path`` lends the mask its image's EXIF orientation."""
    if path is None:
        return np.zeros((image_size, image_size), dtype=bool)
    try:
        orientation = orientation_of(image_path) if image_path else 1
        defect = decode_mask(path, orientation=orientation).defect
        im = Image.fromarray(defect.astype(np.uint8) * 255, "L")
        arr = np.asarray(im.resize((image_size, image_size), Image.NEAREST)) > 127
    except Exception as exc:
        raise ImageLoadError(f"cannot read mask file {path!r}: {exc}") from exc
    return arr


def load_native(path: str) -> np.ndarray:
    """RGB image at its native size (as :func:`load_image` decodes it), uint8 HxWx3."""
    try:
        return np.asarray(decode_image(path), dtype=np.uint8)
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, ...)
        raise ImageLoadError(f"cannot read image file {path!r}: {exc}") from exc


def native_sizes(samples: Sequence[Sample]) -> list[tuple[int, int]]:
    """(H, W) of every sample's image as decoded (EXIF orientation applied)."""
    out = []
    for s in samples:
        try:
            w, h = upright_size(s.image_path)  # the header only: every image is decoded once, later
        except Exception as exc:
            raise ImageLoadError(f"cannot read image file {s.image_path!r}: {exc}") from exc
        out.append((h, w))
    return out


def load_native_mask(sample: Sample, shape: tuple[int, int]) -> np.ndarray:
    """The sample's defect mask at its native size (bool); all False for a good image."""
    if sample.mask_path is None:
        return np.zeros(shape, dtype=bool)
    try:
        orientation = orientation_of(sample.image_path) if sample.image_path else 1
        return np.asarray(decode_mask(sample.mask_path, orientation=orientation).defect, dtype=bool)
    except Exception as exc:
        raise ImageLoadError(f"cannot read mask file {sample.mask_path!r}: {exc}") from exc


def load_canvas_masks(samples: Sequence[Sample], canvas: tuple[int, int]) -> np.ndarray:
    """All ground-truth masks on the evaluation canvas (N, H, W), resampled by area, never by
    nearest neighbour (:func:`geometry.area_resample_mask`)."""
    from .geometry import area_resample_mask

    out = np.zeros((len(samples), *canvas), dtype=bool)
    for i, s in enumerate(samples):
        if s.mask_path is not None:
            out[i] = area_resample_mask(load_native_mask(s, canvas), canvas)
    return out


class InputDataset(Dataset):
    """Every model input of ``samples`` under a :class:`geometry.Preprocessing` (one per image,
    or one per tile), as uint8 CHW tensors; ``owner[k]`` is the image of input k. Read in order,
    each image is decoded once (the last one is kept)."""

    def __init__(self, samples: Sequence[Sample], preprocessing, sizes: Sequence[tuple[int, int]]):
        self.samples = list(samples)
        self.prep = preprocessing
        self.owner: list[int] = []
        self.part: list[int] = []
        for i, hw in enumerate(sizes):
            n = preprocessing.count(hw)
            self.owner += [i] * n
            self.part += list(range(n))
        self._cached: tuple[int, list[np.ndarray]] | None = None

    def __len__(self) -> int:
        return len(self.owner)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, int]:
        i = self.owner[k]
        if self._cached is None or self._cached[0] != i:
            self._cached = (i, self.prep.inputs(load_native(self.samples[i].image_path)))
        img = self._cached[1][self.part[k]]
        return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))), k


def make_input_loader(samples, preprocessing, sizes, batch_size, num_workers=0) -> DataLoader:
    return DataLoader(InputDataset(samples, preprocessing, sizes), batch_size=batch_size, shuffle=False,
                      num_workers=num_workers)


class ImageDataset(Dataset):
    """Images as uint8 CHW tensors (the backbone normalises them with its own mean/std)."""

    def __init__(self, samples: Sequence[Sample], image_size: int):
        self.samples = list(samples)
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, int]:
        img = load_image(self.samples[idx].image_path, self.image_size)
        return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))), idx


def make_loader(samples, image_size, batch_size, num_workers=0) -> DataLoader:
    return DataLoader(ImageDataset(samples, image_size), batch_size=batch_size, shuffle=False,
                      num_workers=num_workers)


def load_masks(samples: Sequence[Sample], image_size: int) -> np.ndarray:
    """All ground-truth masks as a bool array (N, H, W)."""
    out = np.zeros((len(samples), image_size, image_size), dtype=bool)
    for i, s in enumerate(samples):
        if s.mask_path is not None:
            out[i] = load_mask(s.mask_path, image_size, s.image_path)
    return out


# The split is re-exported here for older imports; it lives in a torch-free module so the web
# process (launch checks) can use it without importing torch.
from .split import split_problems, split_summary, split_validation_test  # noqa: E402,F401
