"""Issue 20: the pages made by third-party code (Django admin, Swagger, the browsable API) work under
the Content-Security-Policy (the browser_page fixture fails the test on any violation)."""
import pytest

from annotator.models import ImportJob

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_admin_swagger_and_browsable_api_work_under_the_policy(browser_page, login_as, live_server, demo_dataset,
                                                               admin_account):
    page = browser_page
    login_as(page, admin_account)
    for path in ("/admin/", "/admin/annotator/dataset/", f"/admin/annotator/dataset/{demo_dataset.pk}/change/",
                 "/admin/annotator/user/add/", "/admin/annotator/dataset/upload/"):
        page.goto(f"{live_server.url}{path}")
        page.wait_for_load_state("networkidle")
        assert page.locator("#content").is_visible(), path

    # The upload job page follows its job with a static script (it was inline).
    job = ImportJob.objects.create(upload_path="unused.zip", file_name="demo.zip", created_by=admin_account)
    page.goto(f"{live_server.url}/admin/annotator/dataset/upload/{job.pk}/")
    assert page.inner_text("#job-status") == "Queued"
    ImportJob.objects.filter(pk=job.pk).update(status="done", stage="done", messages=["demo: 1 added"])
    page.wait_for_selector("#job-messages li.success")
    assert page.is_visible("#job-links") and not page.is_visible("#job-cancel-form")

    # Swagger renders the schema from its script file.
    page.goto(f"{live_server.url}/api/docs/")
    page.wait_for_selector(".swagger-ui .opblock")
    assert "DefectBench API" in page.inner_text(".swagger-ui .info")

    # DRF's browsable API.
    page.goto(f"{live_server.url}/api/datasets/")
    page.wait_for_load_state("networkidle")
    assert demo_dataset.name in page.inner_text(".response-info")
