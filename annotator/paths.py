"""Where dataset files may live: the one rule for import, the admin and serving.

Files are referenced in place under ``settings.DEFECTBENCH_DATA_ROOTS``. A path is acceptable
only when, with every symlink and ``..`` resolved, it lies inside one of those roots. Paths stored
on images are relative to their dataset's root and may not climb out of it by themselves.
The check is repeated at serving time: a file replaced by a symlink after import is refused then.
"""
import os
import re
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.core.exceptions import ValidationError


def data_roots() -> list[Path]:
    return [Path(root).resolve() for root in settings.DEFECTBENCH_DATA_ROOTS]


def inside_data_roots(path) -> bool:
    resolved = Path(path).resolve()
    return any(resolved == root or resolved.is_relative_to(root) for root in data_roots())


def shown_path(path) -> str:
    """``path`` as a message a user reads names it: relative to the data root it lies in (a root
    itself by its name), a path outside every root by its last part only. Never the server's
    absolute path, nor where a symlink points (the full path belongs in the server log)."""
    given = Path(os.path.abspath(Path(path).expanduser()))
    roots = sorted(data_roots(), key=lambda root: len(root.parts), reverse=True)  # the closest root first
    for candidate in (given, given.resolve()):
        for root in roots:
            if candidate == root:
                return root.name
            if candidate.is_relative_to(root):
                return candidate.relative_to(root).as_posix()
    return given.name


# An absolute path in a message: "/" not part of a relative path, a URL or a number ("16/20").
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~:/-])/[^\s'\"()\[\]{},;]+")


def without_server_paths(text: str) -> str:
    """``text`` (an exception's message: a library's, the engine's) with every absolute path in
    it as ``shown_path`` names it."""
    return _ABSOLUTE_PATH.sub(lambda match: shown_path(match.group(0)), text or "")


def validate_relative_path(value: str) -> None:
    """A dataset-relative file path: forward slashes, no absolute path, no ``..``, no NUL."""
    if not value:
        return
    if "\x00" in value or "\\" in value:
        raise ValidationError("A file path may not contain backslashes or NUL characters.")
    pure = PurePosixPath(value)
    if pure.is_absolute() or (len(value) > 1 and value[1] == ":"):
        raise ValidationError("A file path must be relative to the dataset folder, not absolute.")
    if ".." in pure.parts:
        raise ValidationError("A file path may not contain '..'.")


def validate_data_root(value: str) -> None:
    """A dataset folder: absolute and, resolved, inside the allowed data roots."""
    if "\x00" in value or not Path(value).is_absolute():
        raise ValidationError("The dataset folder must be an absolute path.")
    if not inside_data_roots(value):
        # Neither the roots nor where the value resolves to: server paths stay in the settings.
        raise ValidationError(f"{value} is outside the allowed data roots (DEFECTBENCH_DATA_ROOTS).")


class UnsafeFile(Exception):
    """The file resolves outside the data roots (a symlink or path pointing elsewhere)."""


def servable_file(root, relative: str) -> Path:
    """``root / relative`` resolved now; UnsafeFile unless it is a regular file inside the data roots.

    FileNotFoundError when it does not exist.
    """
    try:
        validate_relative_path(relative)
    except ValidationError as error:
        raise UnsafeFile(error.messages[0]) from None
    resolved = (Path(root) / relative).resolve()
    if not inside_data_roots(resolved) or not inside_data_roots(root):
        raise UnsafeFile(f"{relative} resolves outside the allowed data roots.")
    if not resolved.is_file():
        raise FileNotFoundError(relative)
    return resolved


# A mask DefectBench keeps itself (drawn in its mask editor for an anomalous image imported
# without one) lies under the media root, never in the user's dataset folder. Its image's
# ``mask_path`` is this prefix + its path relative to the media root, inside DRAWN_MASKS_FOLDER
# (``annotator.services.masks``). A re-import keeps it (the folder has no mask for the image).
MEDIA_MASK_PREFIX = "media:"
DRAWN_MASKS_FOLDER = "drawn-masks"


def is_media_mask(mask_relative: str) -> bool:
    return bool(mask_relative) and mask_relative.startswith(MEDIA_MASK_PREFIX)


def mask_file(root, image_relative: str, mask_relative: str) -> Path:
    """The mask file of an image: ``root/mask_relative``, or, when that is an annotation file
    (LabelMe, COCO JSON: the polygons layout), the mask rasterised from it at import, kept under
    the media root (``annotator.polygon_masks``), or a mask kept under the media root
    (``MEDIA_MASK_PREFIX``: drawn in DefectBench)."""
    from annotator.polygon_masks import is_annotation_file, masks_dir, rendered_mask

    if is_media_mask(mask_relative):
        return Path(settings.MEDIA_ROOT) / mask_relative.removeprefix(MEDIA_MASK_PREFIX)
    if is_annotation_file(mask_relative):
        return rendered_mask(masks_dir(settings.MEDIA_ROOT, Path(root)), image_relative)
    return Path(root) / mask_relative


def servable_mask(root, image_relative: str, mask_relative: str) -> Path:
    """``servable_file`` for a mask (see ``mask_file``). A rasterised mask is DefectBench's own
    file: it must lie in the media root's mask folder, and its annotation file must still be a
    servable file of the dataset."""
    from annotator.polygon_masks import RENDERED_FOLDER, is_annotation_file

    if is_media_mask(mask_relative):
        relative = mask_relative.removeprefix(MEDIA_MASK_PREFIX)
        try:
            validate_relative_path(relative)
        except ValidationError as error:
            raise UnsafeFile(error.messages[0]) from None
        resolved = mask_file(root, image_relative, mask_relative).resolve()
        if not resolved.is_relative_to((Path(settings.MEDIA_ROOT) / DRAWN_MASKS_FOLDER).resolve()):
            raise UnsafeFile(f"the mask of {image_relative} resolves outside the media root's drawn-mask folder.")
        if not resolved.is_file():
            raise FileNotFoundError(f"the drawn mask of {image_relative}")
        return resolved
    if not is_annotation_file(mask_relative):
        return servable_file(root, mask_relative)
    servable_file(root, mask_relative)
    validate_relative_path(image_relative)
    resolved = mask_file(root, image_relative, mask_relative).resolve()
    if not resolved.is_relative_to((Path(settings.MEDIA_ROOT) / RENDERED_FOLDER).resolve()):
        raise UnsafeFile(f"the mask of {image_relative} resolves outside the media root's mask folder.")
    if not resolved.is_file():
        raise FileNotFoundError(f"the mask of {image_relative} (drawn from {mask_relative}; import the dataset again)")
    return resolved
