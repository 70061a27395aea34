"""Masks drawn in the mask editor, server side: saving a PNG as a new revision under the media
root (never into the dataset's folder) that every mask reader reads, the refusals (not a PNG,
wrong size, empty, too large, someone else's mask) that change nothing, and the history."""
import io

import numpy as np
import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from PIL import Image as PILImage

from annotator.models import Image, Label, MaskRevision
from annotator.paths import mask_file
from annotator.services import masks, queue
from annotator.services.display import display_file
from annotator.services.labels import save_label
from tests.annotator.mask_helpers import folder_state, make_maskless_images, mask_png, read_mask

pytestmark = pytest.mark.django_db

WIDTH, HEIGHT = 60, 40


@pytest.fixture
def maskless(data_root):
    return make_maskless_images(data_root / "parts", count=2, size=(WIDTH, HEIGHT))


def _defect(x0=10, y0=5, x1=30, y1=20) -> np.ndarray:
    defect = np.zeros((HEIGHT, WIDTH), dtype=bool)
    defect[y0:y1, x0:x1] = True
    return defect


def _save(client, image, png: bytes, **query):
    query.setdefault("start", "empty")
    query.setdefault("changed", "1")
    url = reverse("mask-save", args=[image.pk]) + "?" + "&".join(f"{k}={v}" for k, v in query.items())
    return client.post(url, data=png, content_type="image/png")


def _unchanged(image, settings):
    image.refresh_from_db()
    assert image.mask_path == "" and not MaskRevision.objects.filter(image=image).exists()
    assert not (settings.MEDIA_ROOT / "drawn-masks").exists()


def test_a_drawn_mask_is_a_new_file_under_the_media_root_that_every_reader_reads(
        client, annotator_account, maskless, data_root, settings):
    image = maskless[0]
    before = folder_state(data_root)
    client.force_login(annotator_account)
    defect = _defect()
    # Grey and coloured values, a transparent corner: made binary by the importer's mask rule.
    rgba = np.zeros((HEIGHT, WIDTH, 4), dtype=np.uint8)
    rgba[defect] = (30, 200, 90, 255)
    rgba[0:3, 0:3] = (255, 255, 255, 0)  # fully transparent never counts
    out = io.BytesIO()
    PILImage.fromarray(rgba, "RGBA").save(out, format="PNG")

    response = _save(client, image, out.getvalue())
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["revision"]["number"] == 1 and body["revision"]["origin"] == "drawn"
    assert body["revision"]["by"] == "ann" and body["history"][0]["id"] == body["revision"]["id"]

    image.refresh_from_db()
    stored = settings.MEDIA_ROOT / "drawn-masks" / str(image.product.dataset_id) / str(image.pk) / "1.png"
    assert image.mask_path == f"media:drawn-masks/{image.product.dataset_id}/{image.pk}/1.png"
    with PILImage.open(stored) as picture:
        assert picture.mode == "L" and set(np.unique(np.asarray(picture))) == {0, 255}
    assert np.array_equal(read_mask(stored), defect)
    # Display cache, file view, the benchmark's sample path: all the same mask.
    assert np.array_equal(read_mask(display_file(image, kind="mask", size=None)), defect)
    served = client.get(reverse("image-file", args=[image.pk, "mask"]))
    assert served.status_code == 200
    assert np.array_equal(np.asarray(PILImage.open(io.BytesIO(b"".join(served.streaming_content)))) > 127, defect)
    from inference.engine.pixels import decode_mask

    assert np.array_equal(decode_mask(mask_file(image.product.dataset.root, image.path, image.mask_path)).defect, defect)
    revision = MaskRevision.objects.get(image=image)
    assert revision.defect_pixels == defect.sum() and revision.previous is None
    # The user's data folder is never written.
    assert folder_state(data_root) == before


@pytest.mark.parametrize("case, message", [
    ("jpeg", "must be a PNG"),
    ("size", "is 59×40 pixels but the image is 60×40"),
    ("transposed", "is 40×60 pixels but the image is 60×40"),
    ("empty", "The mask is empty"),
    ("broken", "cannot be read"),
    ("large", "more than the limit of 100"),
    ("start", "starting point"),
])
def test_bad_masks_are_refused_with_a_reason_and_change_nothing(client, annotator_account, maskless, data_root,
                                                                settings, case, message):
    image = maskless[0]
    before = folder_state(data_root)
    client.force_login(annotator_account)
    png, query = mask_png(_defect()), {}
    if case == "jpeg":
        out = io.BytesIO()
        PILImage.fromarray(_defect().astype(np.uint8) * 255).save(out, format="JPEG")
        png = out.getvalue()
    elif case == "size":
        png = mask_png(np.ones((HEIGHT, WIDTH - 1), dtype=bool))
    elif case == "transposed":
        png = mask_png(np.ones((WIDTH, HEIGHT), dtype=bool))
    elif case == "empty":
        png = mask_png(np.zeros((HEIGHT, WIDTH), dtype=bool))
    elif case == "broken":
        png = mask_png(_defect())[:60]
    elif case == "large":
        settings.DEFECTBENCH_MAX_MASK_UPLOAD_BYTES = 100
        png = mask_png(np.random.default_rng(1).random((HEIGHT, WIDTH)) > 0.5)  # noise: no 100-byte PNG
    elif case == "start":
        query["start"] = "guess"
    response = _save(client, image, png, **query)
    assert response.status_code == 400 and message in response.json()["detail"], response.content
    _unchanged(image, settings)
    assert folder_state(data_root) == before


def test_who_may_replace_a_mask(client, make_user, annotator_account, reviewer_account, admin_account, maskless,
                                settings):
    image, other = maskless
    colleague = make_user("bob", role="annotator")
    client.force_login(annotator_account)
    assert _save(client, image, mask_png(_defect())).status_code == 201
    # Redrawing one's own mask: yes; another annotator replacing it: no, and nothing changes.
    assert _save(client, image, mask_png(_defect(0, 0, 5, 5)), start="mask", changed="1").status_code == 201
    client.force_login(colleague)
    refused = _save(client, image, mask_png(_defect(1, 1, 4, 4)), start="mask", changed="1")
    assert refused.status_code == 403 and "only reviewers and admins replace someone else's mask" in refused.json()["detail"]
    assert "ann's mask" in refused.json()["detail"]
    assert MaskRevision.objects.filter(image=image).count() == 2
    page = client.get(reverse("mask-editor", args=[image.pk]))
    assert page.status_code == 200 and "only reviewers and admins" in page.content.decode()
    # Reviewers and admins may.
    client.force_login(reviewer_account)
    assert _save(client, image, mask_png(_defect(2, 2, 9, 9)), start="mask", changed="1").status_code == 201
    # The mask a dataset came with is replaced by reviewers and admins only.
    Image.objects.filter(pk=other.pk).update(mask_path="test/scratch/000.png")
    client.force_login(annotator_account)
    assert _save(client, other, mask_png(_defect()), start="empty").status_code == 403
    client.force_login(admin_account)
    made = _save(client, other, mask_png(_defect()), start="mask")
    assert made.status_code == 201 and made.json()["revision"]["startedFrom"] == "the dataset's mask"
    # Not signed in: the login page, nothing saved.
    client.logout()
    anonymous = _save(client, image, mask_png(_defect()))
    assert anonymous.status_code == 302 and "/accounts/login/" in anonymous["Location"]
    assert MaskRevision.objects.filter(image=image).count() == 3
    # Defect-free images have no mask to draw.
    client.force_login(admin_account)
    good = Image.objects.get(product=image.product, is_anomalous=False)
    assert client.get(reverse("mask-editor", args=[good.pk])).status_code == 404
    assert _save(client, good, mask_png(_defect())).status_code == 404


def test_origin_history_and_starting_from_an_earlier_revision(client, annotator_account, maskless):
    image = maskless[0]
    client.force_login(annotator_account)
    first = _save(client, image, mask_png(_defect()), start="proposal", changed="0", note="padim (deployed, run 3)")
    assert first.json()["revision"]["origin"] == "proposed"
    assert first.json()["revision"]["startedFrom"] == "padim (deployed, run 3)"
    second = _save(client, image, mask_png(_defect(0, 0, 8, 8)), start="proposal", changed="1")
    assert second.json()["revision"]["origin"] == "edited"
    # The current mask saved again unchanged: nothing to save (the server compares, whatever the browser says).
    same = _save(client, image, mask_png(_defect(0, 0, 8, 8)), start="mask", changed="1")
    assert same.status_code == 400 and "Nothing changed" in same.json()["detail"]
    # Revision 1 opened as the starting point and saved as it is: a new revision (edited), not a rewrite.
    first_id = first.json()["revision"]["id"]
    restored = _save(client, image, mask_png(_defect()), start="mask", revision=first_id, changed="0")
    assert restored.status_code == 201, restored.content
    body = restored.json()
    assert body["revision"]["number"] == 3 and body["revision"]["startedFrom"] == "revision 1"
    assert [r["number"] for r in body["history"]] == [3, 2, 1]
    assert [r["origin"] for r in body["history"]] == ["edited", "edited", "proposed"]
    revisions = list(MaskRevision.objects.filter(image=image).order_by("number"))
    assert revisions[2].previous == revisions[1] and revisions[1].previous == revisions[0]
    # Each revision's file is served upright as it was saved.
    old = client.get(body["history"][2]["url"])
    assert old.status_code == 200 and np.array_equal(np.asarray(PILImage.open(io.BytesIO(old.content))) > 127, _defect())
    # Append-only.
    with pytest.raises(ValidationError):
        revisions[0].save()
    with pytest.raises(ValidationError):
        revisions[0].delete()
    # The page lists the history.
    html = client.get(reverse("mask-editor", args=[image.pk])).content.decode()
    assert "Edit mask" in html and '"number": 3' in html


def test_after_saving_the_image_is_in_the_queue_and_off_the_list_of_images_that_need_a_mask(
        client, annotator_account, maskless):
    image = maskless[0]
    client.force_login(annotator_account)
    listing = client.get(reverse("mask-list", args=[image.product_id])).content.decode()
    assert f'data-image="{image.pk}"' in listing and "Draw mask" in listing
    assert _save(client, image, mask_png(_defect())).status_code == 201
    listing = client.get(reverse("mask-list", args=[image.product_id])).content.decode()
    assert f'data-image="{image.pk}"' not in listing
    handed = queue.next_image(annotator_account, product=image.product)
    assert handed is not None and handed.pk in {i.pk for i in maskless}
    product_page = client.get(reverse("product-detail", args=[image.product_id])).content.decode()
    assert "Images that need a mask" in product_page and "Edit mask" in product_page and "Draw mask" in product_page


def test_review_page_says_how_the_mask_was_made(client, make_user, annotator_account, reviewer_account, maskless):
    image = maskless[0]
    client.force_login(annotator_account)
    _save(client, image, mask_png(_defect()), start="proposal", changed="1", note="padim (fitted, run 1)")
    save_label(image=image, annotator=annotator_account, background=True, category=Label.Category.SURFACE)
    save_label(image=image, annotator=make_user("bob"), background=True, category=Label.Category.STRUCTURAL)
    client.force_login(reviewer_account)
    html = client.get(reverse("review")).content.decode()
    assert "Mask edited by ann (revision 1, from padim (fitted, run 1))" in html


def test_deleting_the_dataset_removes_its_drawn_masks(client, annotator_account, admin_account, maskless, settings,
                                                      django_capture_on_commit_callbacks):
    from annotator.services.dataset_lifecycle import delete_dataset, loss_summary

    image = maskless[0]
    client.force_login(annotator_account)
    _save(client, image, mask_png(_defect()))
    dataset = image.product.dataset
    assert ("masks drawn in the mask editor", 1) in loss_summary(dataset)
    folder = settings.MEDIA_ROOT / "drawn-masks" / str(dataset.pk)
    assert folder.is_dir()
    with django_capture_on_commit_callbacks(execute=True):
        delete_dataset(dataset, admin_account, dataset.name)
    assert not folder.exists() and not MaskRevision.objects.exists()


def test_a_redrawn_mask_is_not_served_from_the_browsers_copy_of_the_old_one(client, annotator_account, maskless):
    image = maskless[0]
    client.force_login(annotator_account)
    url = reverse("image-file", args=[image.pk, "mask"]) + "?size=512"
    _save(client, image, mask_png(_defect()))
    first = client.get(url)
    tag = first["ETag"]
    assert first.status_code == 200 and first["Cache-Control"] == "private, no-cache"
    assert client.get(url, HTTP_IF_NONE_MATCH=tag).status_code == 304
    _save(client, image, mask_png(_defect(0, 0, 4, 4)), start="mask")
    again = client.get(url, HTTP_IF_NONE_MATCH=tag)
    assert again.status_code == 200 and again["ETag"] != tag
    shown = np.asarray(PILImage.open(io.BytesIO(b"".join(again.streaming_content)))) > 127
    assert shown.sum() == 16
