"""Nearest defect-free reference per anomalous image (issue 12), computed once per product."""
import pytest
from PIL import Image as PILImage, ImageDraw

from annotator.models import Image, NearestReference, ReferenceIndex
from annotator.services import references
from tests.api.labelling_factory import make_dataset

pytestmark = pytest.mark.django_db


def test_nearest_reference_is_the_most_similar_good_image(tmp_path, settings, django_capture_on_commit_callbacks,
                                                          monkeypatch):
    settings.DEFECTBENCH_DATA_ROOTS = [tmp_path]
    dataset = make_dataset(tmp_path, products=(("widget", "object", 2),), good_train=3, size=96)
    widget = dataset.products.get()
    goods = list(Image.objects.filter(product=widget, split="train").order_by("path"))
    anomalous = list(Image.objects.filter(product=widget, is_anomalous=True).order_by("path"))
    # Three distinct defect-free pictures; each anomalous one is a copy of one of them with a blemish.
    shapes = [lambda d: d.rectangle((10, 10, 80, 40), fill=(230, 230, 20)),
              lambda d: d.ellipse((20, 20, 90, 90), fill=(20, 200, 230)),
              lambda d: d.polygon([(0, 95), (48, 0), (95, 95)], fill=(220, 30, 160))]
    for image, shape in zip(goods, shapes):
        picture = PILImage.new("RGB", (96, 96), (40, 40, 40))
        shape(ImageDraw.Draw(picture))
        picture.save(image.file_path)
    for image, source in zip(anomalous, (goods[2], goods[0])):
        picture = PILImage.open(source.file_path).convert("RGB")
        ImageDraw.Draw(picture).line((60, 60, 70, 75), fill=(0, 0, 0), width=2)
        picture.save(image.file_path)

    sent = []
    monkeypatch.setattr("annotator.tasks.compute_references.delay", lambda pk: sent.append(pk))
    assert references.nearest_reference(anomalous[0]) == goods[0]  # before: the first good image
    with django_capture_on_commit_callbacks(execute=True):
        references.ensure_references(widget)
        references.ensure_references(widget)
    assert sent == [widget.pk]  # queued once per product
    assert references.compute_references(widget.pk) == ReferenceIndex.Status.DONE
    assert references.nearest_reference(anomalous[0]) == goods[2]
    assert references.nearest_reference(anomalous[1]) == goods[0]
    assert NearestReference.objects.count() == 2
    assert references.compute_references(widget.pk) == "done"  # idempotent: done is not redone
