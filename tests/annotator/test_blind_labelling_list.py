"""Issue 22: annotators never learn from their labelling list that another label differs from
theirs (blind double labelling); reviewers and admins still see and filter disagreements."""
import re

import pytest

from annotator.models import Image
from annotator.services.labels import save_label
from tests.api.labelling_factory import make_dataset


@pytest.fixture
def disagreement(db, tmp_path, settings, make_user):
    settings.DEFECTBENCH_DATA_ROOTS = [tmp_path]
    dataset = make_dataset(tmp_path, overlap=2, products=(("widget", "object", 3),), good_train=1)
    ann, other = make_user("ann"), make_user("bob")
    image = Image.objects.filter(is_anomalous=True).order_by("path").first()
    save_label(image=image, annotator=ann, background=True, category="surface")
    save_label(image=image, annotator=other, background=True, category="structural")
    return dataset.products.get(), ann


def visible_text(html: str) -> str:
    body = re.search(r"<main.*?</main>|<body.*?</body>", html, re.S).group(0)
    return re.sub(r"<[^>]+>", " ", body).lower()


def test_annotators_do_not_see_disagreement(disagreement, client):
    product, ann = disagreement
    client.force_login(ann)
    for query in ("", "?filter=disagreement"):
        html = client.get(f"/products/{product.pk}/labels/{query}").content.decode()
        assert "disagree" not in visible_text(html) and "decided" not in visible_text(html)
        assert 'data-filter="disagreement"' not in html
        # The reviewers' filter is not theirs: the whole list, not the disagreeing image alone.
        assert html.count("<tr data-image=") == 3


def test_reviewers_still_see_and_filter_disagreements(disagreement, client, reviewer_account):
    product, _ = disagreement
    client.force_login(reviewer_account)
    html = client.get(f"/products/{product.pk}/labels/?filter=disagreement").content.decode()
    assert html.count("<tr data-image=") == 1 and "disagreement</span>" in html
