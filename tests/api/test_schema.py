"""The OpenAPI schema generates without warnings and validates."""
import pytest
from django.core.management import call_command
from rest_framework.test import APIClient


def test_schema_validates_without_warnings(tmp_path):
    target = tmp_path / "schema.yml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target))
    text = target.read_text()
    for path in ("/api/benchmarks/runs/", "/api/labels/", "/api/queue/next/", "/api/review/", "/api/agreement/", "/api/export/",
                 "/api/labels-import/", "/api/images/{id}/workspace/"):
        assert path in text


@pytest.mark.django_db
def test_schema_and_docs_need_login(make_user):
    client = APIClient()
    assert client.get("/api/schema/").status_code in (401, 403)
    client.force_authenticate(make_user("someone"))
    assert client.get("/api/schema/").status_code == 200
    assert client.get("/api/docs/").status_code == 200


def test_schema_documents_error_responses(tmp_path):
    import yaml

    target = tmp_path / "schema.yml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target))
    paths = yaml.safe_load(target.read_text())["paths"]
    for path, operations in paths.items():
        for method, operation in operations.items():
            responses = operation["responses"]
            if path != "/api/auth/token/":
                assert {"401", "403"} <= set(responses), (path, method)
            if method in ("post", "put", "patch"):
                assert "400" in responses, (path, method)
            if "{id}" in path:
                assert "404" in responses, (path, method)
    assert "409" in paths["/api/labels/"]["post"]["responses"]
    assert "409" in paths["/api/labels/{id}/"]["patch"]["responses"]


@pytest.mark.django_db
def test_a_token_for_a_username_and_password(make_user):
    user = make_user("tokenuser")
    client = APIClient()
    response = client.post("/api/auth/token/", {"username": "tokenuser", "password": user.raw_password}, format="json")
    assert response.status_code == 200
    token = response.json()["token"]
    assert client.post("/api/auth/token/", {"username": "tokenuser", "password": "wrong"}, format="json").status_code == 400
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get("/api/datasets/").status_code == 200


@pytest.mark.django_db
def test_export_answers_a_client_that_accepts_csv(make_user, tmp_path, settings):
    from tests.api.labelling_factory import make_dataset

    settings.DEFECTBENCH_DATA_ROOTS = [tmp_path]
    dataset = make_dataset(tmp_path)
    client = APIClient()
    client.force_authenticate(make_user("csvuser"))
    response = client.get(f"/api/export/?dataset={dataset.pk}&variant=images", HTTP_ACCEPT="text/csv")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")


@pytest.mark.django_db
def test_subset_counts_and_the_run_list_refuse_bad_query_values(tmp_path, settings, make_user):
    """A dataset id that is not a number, a status holding a null character: these were 500s."""
    from tests.api.labelling_factory import make_dataset

    settings.DEFECTBENCH_DATA_ROOTS = [tmp_path]
    product = make_dataset(tmp_path).products.first()
    client = APIClient()
    client.force_authenticate(make_user("boss", role="admin"))
    response = client.get(f"/api/benchmarks/subset-counts/?dataset=null&products={product.pk}")
    assert response.status_code == 400 and "dataset" in response.json()
    response = client.get(f"/api/benchmarks/subset-counts/?products={product.pk},x")
    assert response.status_code == 400 and "products" in response.json()
    for status in ("running%00", "sleeping"):
        response = client.get(f"/api/benchmarks/runs/?status={status}")
        assert response.status_code == 400 and "status" in response.json(), status
    assert client.get("/api/benchmarks/runs/?status=queued,running").status_code == 200


@pytest.mark.django_db
def test_a_batch_inspection_body_that_is_not_an_object_is_a_400(tmp_path, settings, make_user):
    """A JSON body of null, a list or a number was a 500; now a 400 and no job is created."""
    from inference.models import InspectionJob
    from tests.api.labelling_factory import make_dataset

    settings.DEFECTBENCH_DATA_ROOTS = [tmp_path]
    product = make_dataset(tmp_path).products.first()
    client = APIClient()
    client.force_authenticate(make_user("checker", role="reviewer"))
    for body in ("null", "[1, 2]", "7"):
        response = client.post(f"/api/products/{product.pk}/inspections/", body, content_type="application/json")
        assert response.status_code == 400 and "non_field_errors" in response.json(), body
    assert not InspectionJob.objects.exists()


@pytest.mark.django_db
def test_a_queued_run_has_no_duration_and_the_schema_says_it_may_be_null(tmp_path, settings, make_user):
    """duration_seconds is null until the run starts; the schema said a number, always."""
    import yaml

    from inference.models import BenchmarkRun
    from tests.api.labelling_factory import make_dataset

    target = tmp_path / "schema.yml"
    call_command("spectacular", "--file", str(target))
    components = yaml.safe_load(target.read_text())["components"]["schemas"]
    assert components["BenchmarkRun"]["properties"]["duration_seconds"]["nullable"] is True

    settings.DEFECTBENCH_DATA_ROOTS = [tmp_path]
    run = BenchmarkRun.objects.create(dataset=make_dataset(tmp_path), model="padim", techniques=["f1"])
    client = APIClient()
    client.force_authenticate(make_user("watcher"))
    assert client.get(f"/api/benchmarks/runs/{run.pk}/").json()["duration_seconds"] is None
    assert client.get("/api/benchmarks/runs/").json()["results"][0]["duration_seconds"] is None


@pytest.mark.django_db
def test_export_errors_are_json_also_for_a_client_that_accepts_csv(make_user):
    """The CSV renderer is for the export itself: a missing dataset is the documented JSON 404."""
    client = APIClient()
    client.force_authenticate(make_user("csvuser"))
    for response in (client.get("/api/export/?dataset=0", HTTP_ACCEPT="text/csv"),
                     client.get("/api/export/?dataset=0&format=csv")):
        assert response.status_code == 404 and response["Content-Type"] == "application/json"
        assert "detail" in response.json()


@pytest.mark.django_db
def test_an_api_url_nothing_answers_is_a_json_404(make_user, client):
    """/api/labels/1.5/ matches no route: JSON like every API error, not Django's HTML page."""
    api = APIClient()
    api.force_authenticate(make_user("lost"))
    for url in ("/api/labels/1.5/", "/api/benchmarks/runs/abc/", "/api/nothing-here/"):
        response = api.get(url)
        assert response.status_code == 404 and response.json() == {"detail": "Not found."}, url
    assert client.get("/no-such-page/")["Content-Type"].startswith("text/html")


def test_schema_documents_404_for_a_page_past_the_end(tmp_path):
    import yaml

    target = tmp_path / "schema.yml"
    call_command("spectacular", "--file", str(target))
    paths = yaml.safe_load(target.read_text())["paths"]
    for path in ("/api/datasets/", "/api/benchmarks/runs/", "/api/labels/"):
        assert "404" in paths[path]["get"]["responses"], path


@pytest.mark.django_db
def test_a_page_past_the_end_is_a_404(make_user):
    client = APIClient()
    client.force_authenticate(make_user("pager"))
    response = client.get("/api/datasets/?page=7")
    assert response.status_code == 404 and response.json() == {"detail": "Invalid page."}
