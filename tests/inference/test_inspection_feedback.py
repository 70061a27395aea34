"""Reviewers mark inspection verdicts through the API (correct, false alarm, missed defect, an
outline), a newer mark supersedes an older one for the rates and both are kept, and a marked
image joins the product's dataset as the mark says, copied under the media root, where the next
benchmark finds it."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from rest_framework.test import APIClient

from annotator.models import Image
from annotator.paths import added_images_root
from annotator.services.display import display_file
from inference.models import DatasetAddition, FeedbackKind, InspectionFeedback, InspectionVerdict, RunSample
from inference.services import deploy, feedback
from inference.services.runs import launch_run

pytestmark = pytest.mark.django_db


@pytest.fixture
def media_in_roots(settings):
    settings.DEFECTBENCH_DATA_ROOTS = [*settings.DEFECTBENCH_DATA_ROOTS, str(settings.MEDIA_ROOT)]


def api(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


def inspected(part, reviewer):
    """Deploy the run's choice and inspect one image it called defective and one it called good."""
    deploy.deploy(part, part.report["selection"]["chosen"], part.run.created_by)
    path_of = {str(s.image_id): s.path for s in part.samples.all()}
    entries = part.report["per_image"]
    chosen = [next(e for e in entries if e["predicted_anomalous"]), next(e for e in entries if not e["predicted_anomalous"])]
    uploads = [deploy.Upload(f"line-{i}.png", path_of[e["key"]]) for i, e in enumerate(chosen)]
    job = deploy.inspect_uploads(part.product, uploads, reviewer)
    called_defective, called_good = InspectionVerdict.objects.filter(job=job).order_by("index")
    assert called_defective.defective and not called_good.defective
    return job, called_defective, called_good


def test_marks_are_kept_and_the_newest_counts(padim_part, reviewer_account, annotator_account, media_in_roots):
    job, bad, good = inspected(padim_part, reviewer_account)
    # The inspect API names each image's verdict row and where to post its feedback.
    shown = api(reviewer_account).get(f"/api/inspections/{job.pk}/").json()["results"]
    assert [r["verdict_id"] for r in shown] == [bad.pk, good.pk]
    assert [r["verdict"] for r in shown] == ["defective", "good"]
    assert shown[0]["urls"]["feedback"] == f"/api/verdicts/{bad.pk}/feedback/"

    client = api(reviewer_account)
    # A mark that contradicts the verdict is refused with a reason, and nothing is written.
    refused = client.post(f"/api/verdicts/{good.pk}/feedback/", {"kind": "false_alarm"}, format="json")
    assert refused.status_code == 400 and "called good" in refused.json()["detail"]
    assert client.post(f"/api/verdicts/{bad.pk}/feedback/", {"kind": "bogus"}, format="json").status_code == 400
    assert not InspectionFeedback.objects.exists()
    # Annotators cannot inspect, so they cannot mark either.
    assert api(annotator_account).post(f"/api/verdicts/{bad.pk}/feedback/", {"kind": "correct"},
                                       format="json").status_code == 403

    first = client.post(f"/api/verdicts/{bad.pk}/feedback/", {"kind": "correct"}, format="json")
    assert first.status_code == 201 and first.json()["kind"] == "correct"
    second = client.post(f"/api/verdicts/{bad.pk}/feedback/", {"kind": "false_alarm", "note": "=dust"}, format="json")
    assert second.status_code == 201
    assert client.post(f"/api/verdicts/{good.pk}/feedback/", {"kind": "correct"}, format="json").status_code == 201
    assert InspectionFeedback.objects.filter(verdict=bad).count() == 2  # both kept

    rates = feedback.deployment_rates([bad.deployment_id])[bad.deployment_id]
    assert (rates.inspected, rates.called_defective, rates.reviewed, rates.confirmed) == (2, 1, 2, 1)
    assert (rates.false_alarm.errors, rates.false_alarm.reviewed) == (1, 1)  # the newer mark counts
    assert (rates.miss.errors, rates.miss.reviewed) == (0, 1)
    assert 0 < rates.false_alarm.low < 1 == rates.false_alarm.value == rates.false_alarm.high
    assert rates.miss.low == 0 and 0 < rates.miss.high < 1

    # The verdict list: keyset pages, each verdict with its newest mark.
    listed = client.get(f"/api/products/{padim_part.product_id}/verdicts/").json()
    assert {"next", "previous", "results"} <= set(listed)
    latest = {row["id"]: row["feedback"] for row in listed["results"]}
    assert latest[bad.pk]["kind"] == "false_alarm" and latest[bad.pk]["note"] == "=dust"
    assert latest[good.pk]["kind"] == "correct"


def test_nothing_in_the_trail_changes_through_the_api(padim_part, reviewer_account, admin_account, media_in_roots):
    _, bad, _ = inspected(padim_part, reviewer_account)
    client = api(admin_account)
    assert client.post(f"/api/verdicts/{bad.pk}/feedback/", {"kind": "correct"}, format="json").status_code == 201
    row = InspectionFeedback.objects.get()
    for url in (f"/api/verdicts/{bad.pk}/feedback/", f"/api/verdicts/{bad.pk}/add-to-dataset/",
                f"/api/products/{padim_part.product_id}/verdicts/"):
        for method in ("put", "patch", "delete"):
            response = getattr(client, method)(url, {"kind": "false_alarm"}, format="json")
            assert response.status_code == 405, (method, url)
    row.refresh_from_db()
    assert row.kind == "correct" and InspectionVerdict.objects.filter(pk=bad.pk).exists()

    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    assert set(schema["paths"]["/api/verdicts/{id}/feedback/"]) == {"post"}
    assert set(schema["paths"]["/api/products/{id}/verdicts/"]) == {"get"}
    assert "cursor" in {p["name"] for p in schema["paths"]["/api/products/{id}/verdicts/"]["get"]["parameters"]}


def _square(picture: Path):
    with PILImage.open(picture) as img:
        w, h = img.size
    return [[w * 0.25, h * 0.25], [w * 0.75, h * 0.25], [w * 0.75, h * 0.75], [w * 0.25, h * 0.75]], (w, h)


def test_marked_images_join_the_dataset_and_the_next_benchmark(padim_part, reviewer_account, admin_account,
                                                              media_in_roots, settings):
    job, bad, good = inspected(padim_part, reviewer_account)
    product = padim_part.product
    client = api(reviewer_account)
    # Not marked yet: nothing to add.
    refused = client.post(f"/api/verdicts/{bad.pk}/add-to-dataset/")
    assert refused.status_code == 400 and "Mark" in refused.json()["detail"]

    feedback.mark(bad, FeedbackKind.FALSE_ALARM, reviewer_account)
    points, (w, h) = _square(feedback.inspected_file(good))
    with pytest.raises(feedback.FeedbackRefused, match="no defect to outline"):
        feedback.mark(bad, FeedbackKind.FALSE_ALARM, reviewer_account, outline=points)
    with pytest.raises(feedback.FeedbackRefused, match="on the"):
        feedback.mark(good, FeedbackKind.MISSED_DEFECT, reviewer_account, outline=[[0, 0], [w * 3, 0], [0, h]])
    missed = feedback.mark(good, FeedbackKind.MISSED_DEFECT, reviewer_account, outline=points)
    outline = np.asarray(PILImage.open(Path(settings.MEDIA_ROOT) / missed.outline_path))
    assert set(np.unique(outline)) == {0, 255} and outline.shape == (h, w)

    images_before = product.images.count()
    response = client.post(f"/api/verdicts/{bad.pk}/add-to-dataset/")
    assert response.status_code == 201, response.json()
    assert response.json()["split"] == "test" and response.json()["is_anomalous"] is False
    assert client.post(f"/api/verdicts/{bad.pk}/add-to-dataset/").status_code == 400  # once
    added_good = Image.objects.get(pk=response.json()["image"])
    added_defect = feedback.add_to_dataset(good, reviewer_account).image
    assert product.images.count() == images_before + 2

    root = added_images_root(product.pk)
    for image in (added_good, added_defect):
        assert image.origin == Image.Origin.INSPECTION and image.split == "test"
        assert image.file_path.is_file() and image.file_path.resolve().is_relative_to(root.resolve())
        assert not image.file_path.resolve().is_relative_to(product.dataset.root_path.resolve())
        assert display_file(image, kind="image", size=None).is_file()  # served like any image
    assert not added_good.is_anomalous and added_good.defect_type == "good" and not added_good.mask_path
    assert added_defect.is_anomalous and added_defect.defect_type == "missed-defect"
    assert display_file(added_defect, kind="mask", size=None).is_file()
    assert added_defect.needs_labels  # it waits in the labelling queue like an imported anomalous image

    run = launch_run(admin_account, product.dataset, [product], model="padim", config={"image_size": 64}, seed=1)
    samples = {s.image_id: s for s in RunSample.objects.filter(product_run__run=run)}
    assert samples[added_good.pk].role == "test" and not samples[added_good.pk].is_anomalous
    assert samples[added_defect.pk].is_anomalous and Path(samples[added_defect.pk].mask_path).is_file()
    assert Path(samples[added_defect.pk].path) == added_defect.file_path
    assert DatasetAddition.objects.count() == 2


def test_adding_needs_the_media_root_inside_the_data_roots(padim_part, reviewer_account):
    _, bad, _ = inspected(padim_part, reviewer_account)
    feedback.mark(bad, FeedbackKind.CORRECT, reviewer_account)
    with pytest.raises(feedback.FeedbackRefused, match="outside the data roots"):
        feedback.add_to_dataset(bad, reviewer_account)
    assert not Image.objects.filter(origin=Image.Origin.INSPECTION).exists()
    assert not added_images_root(bad.product_id).exists() or not any(added_images_root(bad.product_id).rglob("*.png"))
