"""Hostile values sent to every endpoint that read them (issue 20): each is a 400 that names the
field (JSON for the API, a page for the HTML forms) and changes nothing, never a server error.

The causes: a lone surrogate in a JSON string, JSON nested thousands deep, an id that is no id of
the database (1e999, 1.5, 10**30), NUL characters in form and query fields (PostgreSQL cannot store
them), a non-numeric image in the review form, digits Python's ``isdigit`` accepts but ``int`` does
not (``²``). A dataset name with CR/LF or quotes must not break the Content-Disposition of its exports.
"""
import json
from urllib.parse import unquote

import pytest
from django.test import Client

from annotator.models import Dataset, Image, Label, LabelHistory, ReviewDecision
from annotator.services.labels import save_label
from inference.models import BenchmarkRun, Deployment, InspectionJob
from tests.api.labelling_factory import make_dataset

HUGE = "99999999999999999999999999"
DEEP = "[" * 5000 + "]" * 5000


@pytest.fixture
def world(db, tmp_path, settings, make_user, monkeypatch):
    from inference.services import deploy, runs

    settings.DEFECTBENCH_DATA_ROOTS = [tmp_path]
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    monkeypatch.setattr(runs, "enqueue_run", lambda run_id: None)
    monkeypatch.setattr(deploy, "_enqueue", lambda job_id: None)
    dataset = make_dataset(tmp_path, overlap=2)
    users = {
        "annotator": make_user("ann"), "other": make_user("bob"), "reviewer": make_user("rita", role="reviewer"),
        "admin": make_user("ada", role="admin", is_staff=True, is_superuser=True),
    }
    image = Image.objects.filter(is_anomalous=True).order_by("pk").first()
    # A disagreement, so that a review decision would be taken if the form let it through.
    save_label(image=image, annotator=users["annotator"], background=True, category="surface")
    save_label(image=image, annotator=users["other"], background=True, category="structural")
    return {"dataset": dataset, "product": image.product, "image": image, "users": users}


def state():
    """What a refused request must leave as it was."""
    return (Label.objects.count(), LabelHistory.objects.count(), ReviewDecision.objects.count(),
            BenchmarkRun.objects.count(), Deployment.objects.count(), InspectionJob.objects.count(),
            list(Dataset.objects.values_list("name", "label_overlap", "show_defect_folder", "archived")))


def body(text):
    return {"data": text, "content_type": "application/json"}


def label(image="{image}", category='"surface"'):
    return body(f'{{"image": {image}, "background": true, "category": {category}}}')


# (who, method, url, request arguments, field the answer names; None: a parse error's "detail")
API_CASES = {
    "surrogate in a label's category": ("annotator", "post", "/api/labels/", label(category='"\\ud800"'), "category"),
    "surrogate in a run's categories": ("admin", "post", "/api/benchmarks/runs/",
                                        body('{"dataset": {dataset}, "products": [{product}], "categories": ["\\udfff"]}'),
                                        "categories"),
    "surrogate in a review decision": ("reviewer", "post", "/api/review/{image}/",
                                       body('{"background": true, "category": "\\ud800x"}'), "category"),
    "deep JSON, a label": ("annotator", "post", "/api/labels/", body(DEEP), None),
    "deep JSON, the queue": ("annotator", "post", "/api/queue/next/", body(DEEP), None),
    "deep JSON, a launch": ("admin", "post", "/api/benchmarks/runs/", body(f'{{"config": {DEEP}}}'), None),
    "1e999 as the image of a label": ("annotator", "post", "/api/labels/", label(image="1e999"), "image"),
    "1.5 as the image of a label": ("annotator", "post", "/api/labels/", label(image="1.5"), "image"),
    "a huge image of a label": ("annotator", "post", "/api/labels/", label(image=HUGE), "image"),
    "1e999 as the image skipped": ("annotator", "post", "/api/queue/skip/", body('{"image": 1e999}'), "image"),
    "1e999 as the queue's dataset": ("annotator", "post", "/api/queue/next/", body('{"dataset": 1e999}'), "dataset"),
    "1.5 as the queue's product": ("annotator", "post", "/api/queue/next/", body('{"product": 1.5}'), "product"),
    "a huge run to deploy": ("admin", "post", "/api/products/{product}/deployments/", body(f'{{"run": {HUGE}}}'), "run"),
    "a huge product to launch on": ("admin", "post", "/api/benchmarks/runs/",
                                    body(f'{{"dataset": {{dataset}}, "products": [{HUGE}]}}'), "products"),
    "a huge image filter": ("annotator", "get", f"/api/labels/?image={HUGE}", {}, "image"),
    "a huge product filter": ("annotator", "get", f"/api/images/?product={HUGE}", {}, "product"),
    "a huge dataset filter": ("annotator", "get", f"/api/products/?dataset={HUGE}", {}, "dataset"),
    "a huge product in the subset counts": ("admin", "get", f"/api/benchmarks/subset-counts/?products={HUGE}", {},
                                            "products"),
}

# (who, method, url, form data or None for a GET, field label the page names)
PAGE_CASES = {
    "NUL in the defect type filter": ("annotator", "get", "/products/{product}/?defect_type=a%00b", None, "defect type"),
    "NUL in a review note": ("reviewer", "post", "/review/",
                             {"image": "{image}", "background": "yes", "category": "surface", "note": "a\x00b"}, "note"),
    "a non-numeric image reviewed": ("reviewer", "post", "/review/",
                                     {"image": "abc", "background": "yes", "category": "surface"}, "image"),
    "1e999 as the image reviewed": ("reviewer", "post", "/review/",
                                    {"image": "1e999", "background": "yes", "category": "surface"}, "image"),
    "NUL in the annotator of a label import": ("admin", "post", "/datasets/{dataset}/import-labels/",
                                               {"annotator": "ann\x00"}, "annotator"),
    "NUL in a deployment note": ("admin", "post", "/benchmarks/products/{product}/deploy/",
                                 {"run": "1", "technique": "f1", "note": "a\x00"}, "note"),
    "² as the run to deploy": ("admin", "post", "/benchmarks/products/{product}/deploy/", {"run": "²"}, "run"),
    "NUL in a batch folder": ("reviewer", "post", "/benchmarks/products/{product}/inspect/batch/",
                              {"folder": "/data/a\x00b"}, "folder"),
    "² as the product to label": ("annotator", "get", "/datasets/{dataset}/label/?product=%C2%B2", None, "product"),
    "² as the image of the history": ("annotator", "get", "/history/?image=%C2%B2", None, "image"),
    "² as the dataset reviewed": ("reviewer", "get", "/review/?dataset=%C2%B2", None, "dataset"),
    "² as the dataset to launch on": ("admin", "get", "/benchmarks/new/?dataset=%C2%B2", None, "dataset"),
    "² as a product to launch on": ("admin", "get", "/benchmarks/new/?dataset={dataset}&product=%C2%B2", None,
                                    "product"),
    "² as a run compared": ("annotator", "get", "/benchmarks/compare/?runs=1,%C2%B2", None, "runs"),
    "a huge product launched on": ("admin", "post", "/benchmarks/new/",
                                   {"dataset": "{dataset}", "products": HUGE, "models": "padim"}, "products"),
}


def _fill(text: str, world) -> str:
    return (text.replace("{dataset}", str(world["dataset"].pk)).replace("{product}", str(world["product"].pk))
            .replace("{image}", str(world["image"].pk)))


def _client(world, who) -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(world["users"][who])
    return client


@pytest.mark.parametrize("case", API_CASES)
def test_api_answers_a_hostile_value_with_a_400_naming_the_field(world, case):
    who, method, url, kwargs, field = API_CASES[case]
    kwargs = {**kwargs, "data": _fill(kwargs["data"], world)} if "data" in kwargs else kwargs
    before = state()
    response = getattr(_client(world, who), method)(_fill(url, world), **kwargs)
    assert response.status_code == 400, (response.status_code, response.content[:300])
    answer = response.json()
    if field is None:
        assert "nested more than" in answer["detail"]
    else:
        assert field in answer, answer
    assert state() == before


@pytest.mark.parametrize("case", PAGE_CASES)
def test_pages_answer_a_hostile_value_with_a_400_naming_the_field(world, case):
    who, method, url, data, field = PAGE_CASES[case]
    before = state()
    client = _client(world, who)
    if method == "get":
        response = client.get(_fill(url, world))
    else:
        response = client.post(_fill(url, world), {k: _fill(v, world) for k, v in data.items()})
    assert response.status_code == 400, (response.status_code, response.content[:300])
    page = response.content.decode()
    if 'id="launch-problems"' in page:  # the launch form shows its own problems
        assert f"<li>{field}: " in page, page
    else:  # the project's page: each field and its problem
        assert 'id="bad-input"' in page and f"<b>{field}</b>: " in page, page
    assert state() == before


def test_a_review_without_a_choice_still_gets_the_message_and_the_list(world):
    """Only malformed values are a 400: a choice left open is the form's message, as before."""
    response = _client(world, "reviewer").post("/review/", {"image": world["image"].pk, "background": "yes"},
                                               follow=True)
    assert response.status_code == 200 and "Choose a background and a category." in response.content.decode()
    assert not ReviewDecision.objects.exists()


HOSTILE_NAMES = ['a"b', "line\r\nX-Injected: 1", 'back\\slash "quoted"\ttab', "Ünïcode 名前 ✓"]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
@pytest.mark.parametrize("url", ["/datasets/{dataset}/export/images.csv", "/datasets/{dataset}/export/annotations.csv",
                                 "/api/export/?dataset={dataset}", "/api/export/?dataset={dataset}&variant=annotations"])
def test_every_export_of_a_dataset_with_a_hostile_name_downloads(world, name, url):
    world["dataset"].name = name
    world["dataset"].save()
    response = _client(world, "annotator").get(_fill(url, world))
    assert response.status_code == 200
    header = response["Content-Disposition"]
    assert "\r" not in header and "\n" not in header and "X-Injected" not in header.split(";")[0]
    plain, exact = header.split("; filename=")[1].split("; filename*=UTF-8''")
    # The ASCII fallback is one quoted string of plain characters; the exact name keeps its letters.
    assert plain.startswith('"') and plain.endswith('"') and '"' not in plain[1:-1] and plain.isascii()
    saved_as = unquote(exact)
    assert saved_as.endswith(".csv") and not any(c in saved_as for c in '"\\/\r\n\t')
    assert saved_as.replace("_", "").startswith("".join(c for c in name if c not in '"\\/\r\n\t')[:4].replace("_", ""))
    assert b"".join(response.streaming_content).decode().startswith("dataset,")


@pytest.mark.parametrize("path", ["/benchmarks/{run}/report.csv", "/benchmarks/{run}/report.json"])
def test_benchmark_downloads_name_their_file_both_ways(world, path):
    run = BenchmarkRun.objects.create(dataset=world["dataset"], model="padim", techniques=["f1"])
    response = _client(world, "annotator").get(path.replace("{run}", str(run.pk)))
    assert response["Content-Disposition"] == (
        f"attachment; filename=\"benchmark-{run.pk}.{path[-4:].lstrip('.')}\"; "
        f"filename*=UTF-8''benchmark-{run.pk}.{path[-4:].lstrip('.')}")


def test_deep_json_is_refused_before_it_reaches_a_view_of_any_api(world):
    """The parser is the API's default: a view that reads a body gets the parse error."""
    from api.parsers import MAX_DEPTH

    nested = "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)
    response = _client(world, "annotator").post("/api/labels/", **body(f'{{"image": {nested}}}'))
    assert response.status_code == 400 and "nested more than" in response.json()["detail"]
    shallow = _client(world, "annotator").post("/api/labels/", **body(json.dumps(
        {"image": world["image"].pk, "background": True, "category": "surface"})))
    assert shallow.status_code in (200, 201)
