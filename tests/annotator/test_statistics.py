"""Reviewer statistics: snapshots renewed by the periodic task, read (never written) by pages."""
from datetime import timedelta

import pytest
from django.utils import timezone

from annotator.models import DatasetStatistics, Image
from annotator.services import statistics
from annotator.services.labels import save_label
from tests.api.labelling_factory import make_dataset


@pytest.fixture
def dataset(db, tmp_path, settings):
    settings.DEFECTBENCH_DATA_ROOTS = [tmp_path]
    return make_dataset(tmp_path, overlap=2, products=(("widget", "object", 4),), good_train=1)


def test_pages_read_the_snapshot_and_write_nothing(dataset, make_user, client, settings):
    from annotator import tasks

    a, b, reviewer = make_user("a"), make_user("b"), make_user("r", role="reviewer")
    image = Image.objects.filter(is_anomalous=True).first()
    save_label(image=image, annotator=a, background=True, category="surface")
    save_label(image=image, annotator=b, background=True, category="combined")
    client.force_login(reviewer)
    assert client.get(f"/datasets/{dataset.pk}/dashboard/").status_code == 200
    assert client.get(f"/api/agreement/?dataset={dataset.pk}").json()["images"] == 1
    assert not DatasetStatistics.objects.exists()  # reads computed, stored nothing
    assert settings.CELERY_BEAT_SCHEDULE["refresh-dataset-statistics"]["task"] == tasks.refresh_statistics.name
    tasks.refresh_statistics.apply()
    snapshot = DatasetStatistics.objects.get(dataset=dataset)
    assert snapshot.data["agreement"]["images"] == 1
    assert tasks.refresh_statistics.apply().result == 0  # nothing changed since: nothing renewed
    # A new label: pages keep showing the young snapshot, with its time, until the task renews it.
    other = Image.objects.filter(is_anomalous=True).exclude(pk=image.pk).first()
    save_label(image=other, annotator=a, background=False, category="surface")
    body = client.get(f"/api/agreement/?dataset={dataset.pk}").json()
    assert body["images"] == 1 and body["computed_at"] == snapshot.data["computed_at"]
    assert "Label statistics as of" in client.get(f"/datasets/{dataset.pk}/dashboard/").content.decode()
    assert tasks.refresh_statistics.apply().result == 1
    assert client.get(f"/api/agreement/?dataset={dataset.pk}").json()["images"] == 2
    # An old snapshot with changes since is not shown: the figures are computed for the request.
    save_label(image=other, annotator=b, background=False, category="surface")
    DatasetStatistics.objects.update(computed_at=timezone.now() - timedelta(hours=1))
    assert client.get(f"/api/agreement/?dataset={dataset.pk}").json()["images_with_several_labels"] == 2
    assert statistics.current(dataset)["agreement"]["images_with_several_labels"] == 2
