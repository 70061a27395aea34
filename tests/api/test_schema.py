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
