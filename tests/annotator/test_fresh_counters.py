"""Issue 22, item 7: the counters a person reads follow every label and every overlap change at once
(the workspace said "Product 1 / 63" for labels 2-7; the dashboard "63 / 63 fully labelled" right
after the overlap went to 2)."""
import re

import pytest

from annotator.models import Image
from annotator.services import review
from tests.api.labelling_factory import make_dataset

# Committed transactions, as in production: the cached figures are dropped once a change commits.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def dataset(tmp_path, settings):
    settings.DEFECTBENCH_DATA_ROOTS = [tmp_path]
    return make_dataset(tmp_path, overlap=1, products=(("widget", "object", 5),), good_train=1)


def test_the_workspace_product_counter_follows_each_label(dataset, client, make_user):
    annotator = make_user("ann")
    client.force_login(annotator)
    widget = dataset.products.get()
    seen = []
    for _ in range(4):
        data = client.post("/api/queue/next/", {"product": widget.pk}, content_type="application/json").json()
        seen.append((data["progress_user"]["done"], data["progress_product"]["done"]))
        response = client.post("/api/labels/", {"image": data["image"]["id"], "background": True,
                                                "category": "surface"}, content_type="application/json")
        assert response.status_code == 201
    data = client.post("/api/queue/next/", {"product": widget.pk}, content_type="application/json").json()
    seen.append((data["progress_user"]["done"], data["progress_product"]["done"]))
    assert seen == [(0, 0), (1, 1), (2, 2), (3, 3), (4, 4)]
    assert data["progress_product"]["total"] == 5


def test_a_review_decision_counts_at_once(dataset, client, make_user):
    widget = dataset.products.get()
    reviewer = make_user("rita", role="reviewer")
    client.force_login(reviewer)
    image = Image.objects.filter(product=widget, is_anomalous=True).first()
    first = client.get(f"/api/images/{image.pk}/workspace/").json()["progress_product"]["done"]
    review.decide(image=image, reviewer=reviewer, background=True, category="surface")
    assert client.get(f"/api/images/{image.pk}/workspace/").json()["progress_product"]["done"] == first + 1


def dashboard_done(client, dataset) -> str:
    html = client.get(f"/datasets/{dataset.pk}/dashboard/").content.decode()
    row = re.search(r'<tr data-product="widget">.*?</tr>', html, re.S).group(0)
    return re.findall(r"<td>(\d+ / \d+)</td>", row)[-1]


def test_the_dashboard_follows_an_overlap_change_at_once(dataset, client, make_user, admin_account):
    from annotator import tasks
    from annotator.services.labels import save_label

    annotator = make_user("ann")
    for image in Image.objects.filter(is_anomalous=True):
        save_label(image=image, annotator=annotator, background=True, category="surface")
    client.force_login(admin_account)
    tasks.refresh_statistics.apply()  # a young snapshot, as the beat task leaves it
    assert dashboard_done(client, dataset) == "5 / 5"
    response = client.post(f"/datasets/{dataset.pk}/settings/", {"label_overlap": "2"}, follow=True)
    assert "2 annotator(s) per image" in response.content.decode()
    assert dashboard_done(client, dataset) == "0 / 5"
