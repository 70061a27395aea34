"""The queue and the reviewer views cost the same number of queries at any dataset size."""
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from annotator.models import Image
from annotator.services.labels import save_label
from tests.api.labelling_factory import make_dataset


def _queries(call) -> int:
    with CaptureQueriesContext(connection) as captured:
        call()
    return len(captured.captured_queries)


def _costs(tmp_path, name, anomalous, labelled, make_user):
    dataset = make_dataset(tmp_path, name=name, overlap=2, products=(("widget", "object", anomalous),), good_train=1)
    earlier = [make_user(f"{name}-early{i}") for i in range(2)]
    for index, image in enumerate(Image.objects.filter(product__dataset=dataset, is_anomalous=True)[:labelled]):
        for user in earlier:
            save_label(image=image, annotator=user, background=True, category="surface" if index % 3 else "combined")
    annotator, reviewer = APIClient(), APIClient()
    annotator.force_authenticate(make_user(f"{name}-ann"))
    reviewer.force_authenticate(make_user(f"{name}-rev", role="reviewer"))
    costs = {}
    for round_ in range(2):  # the second round is measured (caches warm, as in a running server)
        response = None

        def next_image():
            nonlocal response
            response = annotator.post("/api/queue/next/", {"dataset": dataset.pk}, format="json")
            assert response.status_code == 200

        costs["next_image"] = _queries(next_image)
        image = response.json()["image"]["id"]
        costs["label_submit"] = _queries(lambda: annotator.post(
            "/api/labels/", {"image": image, "background": True, "category": "surface"}, format="json"))
        costs["review_api"] = _queries(lambda: reviewer.get(f"/api/review/?dataset={dataset.pk}"))
        costs["agreement_api"] = _queries(lambda: reviewer.get(f"/api/agreement/?dataset={dataset.pk}"))
    return costs


@pytest.mark.django_db
def test_queries_per_request_do_not_grow_with_the_dataset(tmp_path, settings, make_user):
    settings.DEFECTBENCH_DATA_ROOTS = [tmp_path]
    small = _costs(tmp_path, "small", anomalous=6, labelled=3, make_user=make_user)
    large = _costs(tmp_path, "large", anomalous=60, labelled=45, make_user=make_user)
    assert small == large, (small, large)
