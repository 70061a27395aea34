"""The real KolektorSDD zipped and uploaded in the admin: a job with a progress bar, in Chromium."""
import time
import zipfile

import pytest
from playwright.sync_api import Error as PlaywrightError

from annotator.models import Dataset, Image, ImportJob

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.real_data,
              pytest.mark.django_db(transaction=True)]


def test_kolektorsdd_zip_uploads_as_a_job_with_a_progress_bar(
        real_kolektor_root, celery_worker_process, live_server, browser_page, login_as, admin_account,
        tmp_path, test_output_dir):
    archive = tmp_path / "kolektorsdd.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as out:
        for path in sorted(real_kolektor_root.rglob("*")):
            if path.is_file():
                out.write(path, path.relative_to(real_kolektor_root).as_posix())
    page = browser_page
    login_as(page, admin_account)
    page.goto(f"{live_server.url}/admin/annotator/dataset/upload/")
    page.set_input_files("input[name=file]", str(archive))
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/annotator/dataset/upload/*/")
    assert page.is_visible("#job-progress")

    seen = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            state = (page.inner_text("#job-status"), page.inner_text("#job-stage"),
                     page.get_attribute("#job-progress", "value"), page.get_attribute("#job-progress", "max"))
        except PlaywrightError:
            state = None
        if state and (not seen or seen[-1] != state):
            seen.append(state)
        if state and state[0] in ("Done", "Failed", "Cancelled"):
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"job not finished after 180 s: {seen}\nworker log:\n"
                             f"{celery_worker_process.log_path.read_text()[-3000:]}")
    page.screenshot(path=str(test_output_dir / "upload-job.png"), full_page=True)
    assert seen[-1][0] == "Done", (seen, page.inner_text("#job-messages"))
    assert seen[-1][2] == seen[-1][3]  # the bar is full
    assert any(stage in ("unpacking", "checking images") for _status, stage, _v, _m in seen), seen
    text = page.inner_text("#job-messages")
    assert "kolektorsdd: 112 train/good, 28 test/good, 20 anomalous (20 with mask) — 160 added" in text
    assert "8 duplicate image(s) imported once" in text
    job = ImportJob.objects.get()
    assert job.status == "done" and job.dataset == Dataset.objects.get(name="kolektorsdd")
    assert Image.objects.count() == 160
