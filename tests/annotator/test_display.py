"""Display copies come from the engine's decoding: what a user sees is what a model is scored on."""
import numpy as np
import pytest
from PIL import Image as PILImage

from annotator.services.display import display_file
from annotator.services.importing import import_dataset
from annotator.models import Image
from inference.engine.pixels import decode_image

pytestmark = pytest.mark.django_db


def test_index_mask_and_sideways_jpeg_display_as_the_engine_reads_them(settings, tmp_path):
    settings.DEFECTBENCH_DATA_ROOTS = [tmp_path]
    folder = tmp_path / "cam"
    folder.mkdir()
    stored = np.zeros((20, 40, 3), dtype=np.uint8)
    stored[:5, :10] = 255
    exif = PILImage.Exif()
    exif[0x0112] = 6
    PILImage.fromarray(stored).save(folder / "shot.jpg", exif=exif, quality=100)
    index = np.zeros((20, 40), dtype=np.uint8)
    index[:5, :10] = 1  # a 0/1 mask: black on black if sent as it is
    PILImage.fromarray(index).save(folder / "shot_label.bmp")
    (folder / "good").mkdir()
    PILImage.new("RGB", (20, 40), 9).save(folder / "good" / "g.png")
    import_dataset(folder)
    row = Image.objects.get(path="shot.jpg")

    shown = np.asarray(PILImage.open(display_file(row, kind="image", size=None)))
    mask = np.asarray(PILImage.open(display_file(row, kind="mask", size=None)))

    assert shown.shape == (40, 20, 3)  # upright
    np.testing.assert_array_equal(shown, np.asarray(decode_image(row.file_path)))
    assert set(np.unique(mask)) == {0, 255}
    assert mask.shape == (40, 20) and (shown[..., 0][mask == 255] > 200).all()
    small = PILImage.open(display_file(row, kind="mask", size=128))
    assert small.size == (20, 40)  # never enlarged
