"""Issue 22: a retried run and its original link to each other on the run page, and the button on
a succeeded run says what it does ("Run again"); failed and cancelled runs keep "Retry"."""
import re

import pytest

from inference.models import BenchmarkRun, Status
from inference.services.runs import launch_run, retry_run
from tests.inference.conftest import SMALL

pytestmark = pytest.mark.django_db


def _button(html: str) -> str:
    return re.search(r'data-action="retry"[^>]*>([^<]+)</button>', html).group(1)


def test_retry_and_original_link_both_ways(bench_demo, admin_account, client, django_capture_on_commit_callbacks):
    widget = bench_demo.products.get(name="widget")
    with django_capture_on_commit_callbacks(execute=False):
        original = launch_run(admin_account, bench_demo, [widget], model="padim", config=SMALL, seed=1)
    BenchmarkRun.objects.filter(pk=original.pk).update(status=Status.SUCCEEDED)
    original.refresh_from_db()
    with django_capture_on_commit_callbacks(execute=False):
        again = retry_run(original, admin_account)
    client.force_login(admin_account)

    page = client.get(f"/benchmarks/{original.pk}/").content.decode()
    assert _button(page) == "Run again"
    assert re.search(rf'id="retries"><a href="/benchmarks/{again.pk}/">run #{again.pk}</a>', page)
    listing = client.get("/benchmarks/").content.decode()
    assert "Run again" in listing

    page = client.get(f"/benchmarks/{again.pk}/").content.decode()
    assert re.search(rf'id="retry-of"><a href="/benchmarks/{original.pk}/">run #{original.pk}</a>', page)
    assert 'id="retries"' not in page

    BenchmarkRun.objects.filter(pk=again.pk).update(status=Status.FAILED)
    assert _button(client.get(f"/benchmarks/{again.pk}/").content.decode()) == "Retry"
