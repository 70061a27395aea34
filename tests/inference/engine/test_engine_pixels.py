"""The one decoding of images and masks: every common kind gives the expected pixels, exactly."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inference.engine.data import load_image, load_mask
from inference.engine.pixels import DecodeError, decode_image, decode_mask

H, W = 12, 20  # non-square on purpose
# The defect every mask kind below encodes: a box plus a lone pixel.
EXPECTED = np.zeros((H, W), dtype=bool)
EXPECTED[3:7, 5:11] = True
EXPECTED[10, 17] = True


def _gray(values: np.ndarray, mode="L") -> Image.Image:
    return Image.fromarray(values, mode) if mode != "L" else Image.fromarray(values.astype(np.uint8), "L")


def _edges(noise: int) -> np.ndarray:
    """0/255 mask whose pixels next to the defect get in-between values (anti-aliasing)."""
    values = np.where(EXPECTED, 255, 0).astype(np.int32)
    values[2, 5:11] = 100  # faint edge outside the defect (< 50 %)
    values[7, 5:11] = 90
    values[3:7, 4] = 127
    values[3:7, 11] = 20
    values[3:7, 5] = 128 + noise  # inner edge >= 50 %: still defect
    return values


def mask_kinds() -> dict[str, tuple[Image.Image, str, dict, str]]:
    """name -> (picture, file extension, save options, expected rule)."""
    binary = np.where(EXPECTED, 255, 0).astype(np.uint8)
    kinds = {
        "0/255 PNG": (Image.fromarray(binary, "L"), ".png", {}, "binary"),
        "0/1 PNG": (Image.fromarray(EXPECTED.astype(np.uint8), "L"), ".png", {}, "index"),
        "anti-aliased 8-bit": (Image.fromarray(_edges(0).astype(np.uint8), "L"), ".png", {}, "threshold"),
        "16-bit PNG 0/65535": (Image.fromarray(np.where(EXPECTED, 65535, 0).astype(np.uint16)), ".png", {},
                               "binary"),
        "16-bit TIFF graded": (Image.fromarray((_edges(3) * 257).astype(np.uint16)), ".tif", {}, "threshold"),
        "1-bit BMP": (Image.fromarray(EXPECTED), ".bmp", {}, "binary"),
        "BMP 0/255": (Image.fromarray(binary, "L"), ".bmp", {}, "binary"),
        "TIFF 0/1": (Image.fromarray(EXPECTED.astype(np.uint8), "L"), ".tiff", {}, "index"),
    }
    index = np.zeros((H, W), dtype=np.uint8)
    index[3:7, 5:8] = 1
    index[3:7, 8:11] = 2
    index[10, 17] = 1
    grey_palette = Image.fromarray(index, "P")
    grey_palette.putpalette([0, 0, 0, 1, 1, 1, 2, 2, 2] + [0] * (256 * 3 - 9))
    kinds["palette index 0/1/2"] = (grey_palette, ".png", {}, "palette")
    coloured = Image.fromarray(index, "P")
    coloured.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    kinds["palette coloured classes"] = (coloured, ".png", {}, "palette")
    # Transparent background whose colour is white: transparency wins over colour.
    transparent = Image.fromarray(np.where(index == 0, 3, index).astype(np.uint8), "P")
    transparent.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 255, 255, 255] + [0] * (256 * 3 - 12))
    transparent.info["transparency"] = 3
    kinds["palette with transparency"] = (transparent, ".png", {"transparency": 3}, "palette")
    rgb = np.zeros((H, W, 3), dtype=np.uint8)
    rgb[EXPECTED] = (0, 200, 0)
    rgb[3:7, 8:11] = (10, 0, 250)
    kinds["RGB colour classes"] = (Image.fromarray(rgb, "RGB"), ".png", {}, "colour")
    rgba = np.zeros((H, W, 4), dtype=np.uint8)
    rgba[..., :3] = 255  # white but fully transparent outside the defect
    rgba[EXPECTED] = (255, 0, 0, 255)
    kinds["RGBA colour on transparent"] = (Image.fromarray(rgba, "RGBA"), ".png", {}, "colour")
    return kinds


def write_mask_kind(path: Path, name: str) -> Path:
    picture, ext, options, _ = mask_kinds()[name]
    path = path.with_suffix(ext)
    picture.save(path, **options)
    return path


@pytest.mark.parametrize("name", list(mask_kinds()))
def test_every_mask_kind_decodes_to_the_same_binary_mask(tmp_path, name):
    path = write_mask_kind(tmp_path / "mask", name)

    decoded = decode_mask(path)

    assert decoded.rule == mask_kinds()[name][3]
    np.testing.assert_array_equal(decoded.defect, EXPECTED)
    assert not decoded.lossy


def test_jpeg_mask_is_thresholded_and_flagged_lossy(tmp_path):
    big = np.zeros((64, 64), dtype=np.uint8)
    big[16:40, 20:44] = 255
    path = tmp_path / "mask.jpg"
    Image.fromarray(big).save(path, quality=70)
    assert len(np.unique(np.asarray(Image.open(path)))) > 2  # JPEG noise is real

    decoded = decode_mask(path)

    assert decoded.lossy and decoded.rule == "threshold"
    np.testing.assert_array_equal(decoded.defect, big == 255)


def test_threshold_is_configurable(tmp_path):
    path = tmp_path / "mask.png"
    Image.fromarray(_edges(0).astype(np.uint8), "L").save(path)
    low = decode_mask(path, threshold=0.38)  # 100 and 127 now count, 90 and 20 do not
    assert low.defect[2, 5] and low.defect[3, 4] and not low.defect[7, 5] and not low.defect[3, 11]


def test_float_mask_is_refused_with_the_reason(tmp_path):
    path = tmp_path / "mask.tif"
    Image.new("F", (4, 4), 0.5).save(path)
    with pytest.raises(DecodeError, match="mask has pixel mode F, which no mask rule covers"):
        decode_mask(path)


# --- Images ---------------------------------------------------------------------------------


RGB = np.zeros((H, W, 3), dtype=np.uint8)
RGB[..., 0] = np.arange(W, dtype=np.uint8)[None, :] * 12
RGB[..., 1] = np.arange(H, dtype=np.uint8)[:, None] * 20
RGB[..., 2] = 77


def image_kinds():
    gray = (np.arange(H * W, dtype=np.uint32).reshape(H, W) % 251).astype(np.uint8)
    rgba = np.dstack([RGB, np.full((H, W), 128, np.uint8)])
    palette = Image.fromarray(RGB).quantize(colors=16)
    return {
        "grayscale PNG": (Image.fromarray(gray), ".png", np.dstack([gray] * 3)),
        "RGB PNG": (Image.fromarray(RGB), ".png", RGB),
        "RGBA PNG (alpha dropped)": (Image.fromarray(rgba, "RGBA"), ".png", RGB),
        "palette PNG": (palette, ".png", np.asarray(palette.convert("RGB"))),
        "16-bit TIFF": (Image.fromarray(gray.astype(np.uint16) * 257), ".tif", np.dstack([gray] * 3)),
        "RGB BMP": (Image.fromarray(RGB), ".bmp", RGB),
    }


@pytest.mark.parametrize("name", list(image_kinds()))
def test_every_image_kind_decodes_to_rgb(tmp_path, name):
    picture, ext, expected = image_kinds()[name]
    path = tmp_path / f"image{ext}"
    picture.save(path)

    decoded = decode_image(path)

    assert decoded.mode == "RGB" and decoded.size == (W, H)
    np.testing.assert_array_equal(np.asarray(decoded), expected)


def _exif_rotated(path: Path, picture: Image.Image, orientation: int) -> Path:
    exif = Image.Exif()
    exif[0x0112] = orientation
    picture.save(path, exif=exif, quality=100)
    return path


def test_exif_orientation_turns_image_and_mask_alike(tmp_path):
    """A camera JPEG stored sideways (orientation 6 = turn 90° clockwise) with a mask drawn on
    the stored pixels: both come out upright and still on top of each other."""
    stored = np.zeros((H, W, 3), dtype=np.uint8)
    stored[EXPECTED] = 255
    image = _exif_rotated(tmp_path / "photo.jpg", Image.fromarray(stored), 6)
    mask = tmp_path / "photo_mask.png"
    Image.fromarray(np.where(EXPECTED, 255, 0).astype(np.uint8)).save(mask)

    upright = np.asarray(decode_image(image))
    turned = decode_mask(mask, orientation=6).defect

    assert upright.shape[:2] == (W, H)  # 90° turn: width and height swap
    np.testing.assert_array_equal(turned, np.rot90(EXPECTED, k=-1))
    assert (upright[..., 0][turned] > 200).all() and (upright[..., 0][~turned] < 60).all()
    # The engine reads them the same way: its mask lands on its image's bright pixels.
    engine_image = load_image(str(image), 64)
    engine_mask = load_mask(str(mask), 64, image_path=str(image))
    assert engine_image[..., 0][engine_mask].mean() > 180 and engine_image[..., 0][~engine_mask].mean() < 60


def test_engine_uses_the_shared_decoding(tmp_path):
    path = tmp_path / "deep.tif"
    Image.fromarray(np.full((H, W), 40000, np.uint16)).save(path)
    assert (load_image(str(path), 8) == round(40000 / 257)).all()
    square = np.zeros((16, 16), dtype=np.uint8)
    square[4:9, 2:6] = 1  # a 0/1 mask: with the old "> 127" rule the engine saw no defect
    Image.fromarray(square).save(tmp_path / "square_label.bmp")
    np.testing.assert_array_equal(load_mask(str(tmp_path / "square_label.bmp"), 16), square == 1)
