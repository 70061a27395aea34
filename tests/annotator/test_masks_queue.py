"""Issue 21: an anomalous image without a mask is not labelled until it gets one; then the queue
serves it and every counter a person reads counts it (``annotator.services.masks``)."""
import shutil

import pytest

from annotator.models import AnnotatorProgress, Image
from annotator.services import queue
from annotator.services.nothing_left import nothing_left, reasons
from tests.annotator.mask_helpers import give_mask
from tests.api.labelling_factory import make_dataset

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def dataset(tmp_path, settings):
    settings.DEFECTBENCH_DATA_ROOTS = [tmp_path]
    dataset = make_dataset(tmp_path, overlap=1, products=(("widget", "object", 4),), good_train=1)
    # two of the four anomalous images came without a mask
    for image in Image.objects.filter(is_anomalous=True).order_by("path")[:2]:
        image.mask_path = ""
        image.save(update_fields=["mask_path"])
    return dataset


def served(user, product) -> list[str]:
    paths = []
    while (image := queue.next_image(user, product=product)) is not None:
        paths.append(image.path)
        queue.submit_label(user=user, image=image, background=True, category="surface")
    return paths


def test_only_images_with_a_mask_are_served_until_one_gets_a_mask(dataset, make_user):
    widget = dataset.products.get()
    ann = make_user("ann")
    without = list(Image.objects.filter(is_anomalous=True, mask_path="").order_by("path"))
    assert queue.product_progress(widget).total == 2
    assert queue.user_progress(ann, widget).total == 2

    first = served(ann, widget)

    assert len(first) == 2 and not {image.path for image in without} & set(first)
    assert queue.next_image(ann, product=widget) is None
    said = reasons(nothing_left(ann, dataset=dataset, product=widget))
    assert "2 anomalous images without a mask are not labelled until a mask is drawn" in " ".join(said)
    with pytest.raises(queue.QueueError, match="needs a mask first"):
        queue.submit_label(user=ann, image=without[0], background=True, category="surface")
    assert (queue.user_progress(ann, widget).done, queue.user_progress(ann, widget).total) == (2, 2)

    give_mask(without[0], ann)
    updated = Image.objects.get(pk=without[0].pk)

    assert updated.mask_path.startswith("media:drawn-masks/") and updated.is_labellable
    assert updated.mask_file_path.is_file()
    # counted at once: the product and the annotator now have one more image to label
    assert (queue.product_progress(widget).done, queue.product_progress(widget).total) == (2, 3)
    assert (queue.user_progress(ann, widget).done, queue.user_progress(ann, widget).total) == (2, 3)
    assert served(ann, widget) == [without[0].path]
    assert (queue.user_progress(ann, widget).done, queue.user_progress(ann, widget).total) == (3, 3)
    assert AnnotatorProgress.objects.get(annotator=ann, product=widget).done == 3


def test_a_reimport_keeps_a_drawn_mask(settings, tmp_path, make_user):
    from annotator.services.importing import import_dataset
    from tests.annotator.test_layouts import make_mvtec

    settings.DEFECTBENCH_DATA_ROOTS = [tmp_path]
    folder = make_mvtec(tmp_path / "data", "bottle", defects={"broken_large": 2})
    (folder / "ground_truth/broken_large/000_mask.png").unlink()
    import_dataset(folder)
    image = Image.objects.get(path="test/broken_large/000.png")
    give_mask(image, make_user("ann"), box=(2, 2, 9, 9))

    report = import_dataset(folder)

    image.refresh_from_db()
    assert image.mask_path.startswith("media:drawn-masks/") and image.is_labellable
    assert "2 anomalous (2 with mask)" in str(report)
    shutil.rmtree(folder / "ground_truth")  # the folder's own masks gone: those images need one again
    import_dataset(folder)
    assert Image.objects.filter(is_anomalous=True, mask_path="").count() == 1
