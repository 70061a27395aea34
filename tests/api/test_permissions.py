"""Every labelling endpoint refuses anonymous users (401/403, never a login redirect) and wrong roles."""
import pytest
from rest_framework.test import APIClient

from tests.api.labelling_factory import make_dataset

ROLES = ["annotator", "reviewer", "admin"]
RANK = {"anonymous": 0, "annotator": 1, "reviewer": 2, "admin": 3}


@pytest.fixture
def world(db, tmp_path, settings, make_user):
    settings.DEFECTBENCH_DATA_ROOTS = [tmp_path]
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast users
    dataset = make_dataset(tmp_path, products=(("widget", "object", 2),), good_train=1)
    users = {role: make_user(f"user-{role}", role=role) for role in ROLES}
    image = dataset.products.get(name="widget").images.filter(is_anomalous=True).first()
    from annotator.services import queue

    label = queue.submit_label(user=users["annotator"], image=image, background=True, category="surface")
    return {"dataset": dataset, "image": image, "label": label, "users": users}


# (method, url template, minimum role, body)
ENDPOINTS = [
    ("get", "/api/datasets/", "annotator", None),
    ("get", "/api/datasets/{dataset}/", "annotator", None),
    ("get", "/api/products/", "annotator", None),
    ("get", "/api/products/{product}/", "annotator", None),
    ("get", "/api/images/", "annotator", None),
    ("get", "/api/images/{image}/", "annotator", None),
    ("get", "/api/images/{image}/image/", "annotator", None),
    ("get", "/api/images/{image}/mask/", "annotator", None),
    ("get", "/api/images/{image}/workspace/", "annotator", None),
    ("get", "/api/labels/", "annotator", None),
    ("post", "/api/labels/", "annotator", {"image": "{image}", "background": True, "category": "surface"}),
    ("get", "/api/history/", "annotator", None),
    ("post", "/api/queue/next/", "annotator", {}),
    ("post", "/api/queue/skip/", "annotator", {"image": "{image}"}),
    ("get", "/api/export/?dataset={dataset}", "annotator", None),
    ("get", "/api/review/", "reviewer", None),
    ("post", "/api/review/{image}/", "reviewer", {"background": True, "category": "combined"}),
    ("get", "/api/agreement/?dataset={dataset}", "reviewer", None),
    ("post", "/api/labels-import/", "admin", None),
]


def _fill(value, world):
    ids = {"dataset": world["dataset"].pk, "image": world["image"].pk,
           "product": world["image"].product_id, "label": world["label"].pk}
    if isinstance(value, str):
        return value.format(**ids)
    if isinstance(value, dict):
        return {k: (int(_fill(v, world)) if isinstance(v, str) and v.startswith("{") else v) for k, v in value.items()}
    return value


@pytest.mark.parametrize("method,url,minimum,body", ENDPOINTS, ids=[f"{m} {u}" for m, u, _, _ in ENDPOINTS])
@pytest.mark.parametrize("who", ["anonymous", *ROLES])
def test_endpoint_roles(world, who, method, url, minimum, body):
    client = APIClient()
    if who != "anonymous":
        client.force_authenticate(world["users"][who])
    response = getattr(client, method)(_fill(url, world), _fill(body, world), format="json")
    if who == "anonymous":
        assert response.status_code in (401, 403), response.status_code
        assert "login" not in response.get("Location", "")
    elif RANK[who] < RANK[minimum]:
        assert response.status_code == 403, response.status_code
    else:
        assert response.status_code not in (401, 403), (response.status_code, getattr(response, "data", None))


def test_token_auth_works_without_session(world):
    from rest_framework.authtoken.models import Token

    token = Token.objects.create(user=world["users"]["annotator"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    response = client.get("/api/labels/")
    assert response.status_code == 200
    assert response.data["count"] == 1


def test_annotators_see_and_change_only_their_own_labels(world, make_user):
    other = make_user("other")
    client = APIClient()
    client.force_authenticate(other)
    assert client.get("/api/labels/").data["count"] == 0
    label = world["label"]
    assert client.get(f"/api/labels/{label.pk}/").status_code == 404
    assert client.patch(f"/api/labels/{label.pk}/", {"category": "combined"}, format="json").status_code == 404
    assert client.delete(f"/api/labels/{label.pk}/").status_code == 404
    # Reviewers see everyone's labels but do not change them (they set final labels instead).
    client.force_authenticate(world["users"]["reviewer"])
    assert client.get("/api/labels/").data["count"] == 1
    assert client.patch(f"/api/labels/{label.pk}/", {"category": "combined"}, format="json").status_code == 403
    # The owner changes theirs; history records it.
    client.force_authenticate(world["users"]["annotator"])
    response = client.patch(f"/api/labels/{label.pk}/", {"category": "combined"}, format="json")
    assert response.status_code == 200 and response.data["category"] == "combined"
    assert label.image.label_history.filter(action="updated").exists()
