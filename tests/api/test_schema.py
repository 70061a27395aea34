"""The OpenAPI schema generates without warnings and validates."""
import pytest
from django.core.management import call_command
from rest_framework.test import APIClient


LABELLING_SOURCES = ("api/views.py", "api/serializers.py", "api/permissions.py", "api/labelling_urls.py",
                     "LabelViewSet", "ImageViewSet", "WorkspaceSerializer")


def test_schema_validates(tmp_path, capsys):
    """Validates against the OpenAPI spec; the labelling endpoints add no warning.

    (``--fail-on-warn`` over the whole project would also judge the benchmark endpoints, which
    have their own owner; run ``manage.py spectacular --validate --fail-on-warn`` for that.)
    """
    target = tmp_path / "schema.yml"
    call_command("spectacular", "--validate", "--file", str(target))
    warnings = capsys.readouterr().err
    ours = [line for line in warnings.splitlines() if any(source in line for source in LABELLING_SOURCES)]
    assert not ours, ours
    text = target.read_text()
    for path in ("/api/labels/", "/api/queue/next/", "/api/review/", "/api/agreement/", "/api/export/",
                 "/api/labels-import/", "/api/images/{id}/workspace/"):
        assert path in text


@pytest.mark.django_db
def test_schema_and_docs_need_login(make_user):
    client = APIClient()
    assert client.get("/api/schema/").status_code in (401, 403)
    client.force_authenticate(make_user("someone"))
    assert client.get("/api/schema/").status_code == 200
    assert client.get("/api/docs/").status_code == 200
