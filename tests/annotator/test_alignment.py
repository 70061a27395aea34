"""A product's alignment is measured once per set of defect-free images, in the background."""
import pytest

from annotator.models import Image, ProductAlignment
from annotator.services import alignment
from tests.api.labelling_factory import make_dataset
from tests.inference.engine.scenes import write_scene_files

pytestmark = pytest.mark.django_db


def aligned_and_scattered(tmp_path):
    """Dataset with product 'aligned' (the part in one place) and 'scattered' (moved and rotated)."""
    dataset = make_dataset(tmp_path, products=(("aligned", "object", 2), ("scattered", "object", 2)), good_train=8)
    for product in dataset.products.all():
        goods = Image.objects.filter(product=product, is_anomalous=False)
        write_scene_files([image.file_path for image in goods], moved=product.name == "scattered")
    return dataset


def test_measured_once_in_the_background_and_again_when_the_images_change(
        tmp_path, settings, django_capture_on_commit_callbacks, monkeypatch):
    settings.DEFECTBENCH_DATA_ROOTS = [tmp_path]
    dataset = aligned_and_scattered(tmp_path)
    aligned, scattered = dataset.products.get(name="aligned"), dataset.products.get(name="scattered")
    sent = []
    monkeypatch.setattr("annotator.tasks.measure_alignment.delay", sent.append)
    with django_capture_on_commit_callbacks(execute=True):
        assert alignment.alignment_of(scattered)["aligned"] is None  # a read only queues it
        alignment.alignment_of(scattered)
    assert sent == [scattered.pk]
    assert alignment.measure_alignment(scattered.pk) == ProductAlignment.Status.DONE
    assert alignment.measure_alignment(aligned.pk) == ProductAlignment.Status.DONE
    with django_capture_on_commit_callbacks(execute=True):
        assert alignment.alignment_of(scattered)["aligned"] is False
        assert alignment.alignment_of(aligned)["aligned"] is True
    assert sent == [scattered.pk]  # measured rows are only read

    # A re-import that adds a defect-free image changes the set: measured again.
    Image.objects.filter(product=aligned, split="test", is_anomalous=False).update(split="train")
    with django_capture_on_commit_callbacks(execute=True):
        assert alignment.alignment_of(aligned)["status"] == ProductAlignment.Status.QUEUED
    assert sent[-1] == aligned.pk
