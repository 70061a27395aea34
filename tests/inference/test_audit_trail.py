"""The audit trail of a product: after a redeploy the old verdicts still name the old package and
thresholds, the period's CSV export lists every verdict with its newest mark (formulas
neutralised), the history page shows deployments, label changes, inspections, marks and additions
newest first in keyset pages, and nothing in the trail can be edited or deleted (pages, API, admin)."""
import csv
import io
from datetime import timedelta

import pytest
from django.utils import timezone

from annotator.models import Image
from annotator.services.labels import save_label
from inference.engine.package import package_sha256
from inference.models import InspectionFeedback, InspectionVerdict, Status
from inference.services import deploy, feedback, trail
from inference.services.execution import execute_product_run
from inference.services.runs import launch_run

from .conftest import SMALL

pytestmark = pytest.mark.django_db


def _inspect(part, user, names):
    paths = [s.path for s in part.samples.filter(role="test")[:len(names)]]
    return deploy.inspect_uploads(part.product, [deploy.Upload(n, p) for n, p in zip(names, paths)], user)


def _csv(response) -> list[dict]:
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))


def test_a_redeploy_keeps_the_old_verdicts_and_the_export_lists_them(padim_part, admin_account, reviewer_account,
                                                                      client, settings):
    first_part = padim_part
    product = first_part.product
    first = deploy.deploy(first_part, first_part.report["selection"]["chosen"], admin_account)
    old_job = _inspect(first_part, reviewer_account, ["=HYPERLINK(evil).png", "b.png"])
    old = list(InspectionVerdict.objects.filter(job=old_job).order_by("index"))
    feedback.mark(old[0], "correct", reviewer_account, note="+looks fine")
    old_sha = package_sha256(deploy.package_root(first_part))
    old_thresholds = [(v.image_threshold, v.pixel_threshold) for v in old]

    # A new run, deployed: its verdicts name its own package; the old ones are untouched.
    run = launch_run(admin_account, product.dataset, [product], model="padim", config={**SMALL, "n_features": 40}, seed=2)
    second_part = run.product_runs.get()
    assert execute_product_run(second_part.pk, finalize=True) == Status.SUCCEEDED
    second_part.refresh_from_db()
    second = deploy.deploy(second_part, "normal_fpr", admin_account)
    new_job = _inspect(second_part, reviewer_account, ["c.png"])
    new = InspectionVerdict.objects.get(job=new_job)
    new_sha = package_sha256(deploy.package_root(second_part))
    assert new_sha != old_sha and new.package_sha256 == new_sha and new.deployment == second
    for verdict, thresholds in zip(InspectionVerdict.objects.filter(job=old_job).order_by("index"), old_thresholds):
        assert verdict.deployment == first and verdict.package_sha256 == old_sha
        assert (verdict.image_threshold, verdict.pixel_threshold) == thresholds

    client.force_login(reviewer_account)
    rows = _csv(client.get(f"/benchmarks/products/{product.pk}/verdicts.csv"))
    assert [int(r["verdict_id"]) for r in rows] == [old[0].pk, old[1].pk, new.pk]  # oldest first
    by_id = {int(r["verdict_id"]): r for r in rows}
    row = by_id[old[0].pk]
    assert row["deployment"] == str(first.pk) and row["run"] == str(first_part.run_id)
    assert row["package_sha256"] == old_sha and row["technique"] == first.technique
    assert float(row["image_threshold"]) == old[0].image_threshold and float(row["pixel_threshold"]) == old[0].pixel_threshold
    assert row["engine_version"] == old[0].engine_version and float(row["score"]) == old[0].score
    assert row["verdict"] in ("defective", "good") and row["inspected_by"] == reviewer_account.username
    assert row["feedback"] == "correct" and row["feedback_by"] == reviewer_account.username
    # User text a spreadsheet would run is written as text.
    assert row["image"] == "'=HYPERLINK(evil).png" and row["feedback_note"] == "'+looks fine"
    assert by_id[new.pk]["package_sha256"] == new_sha and by_id[new.pk]["feedback"] == ""

    # A period: both days included; one that ends before the inspections lists none.
    today = timezone.localdate()
    assert len(_csv(client.get(f"/benchmarks/products/{product.pk}/verdicts.csv?start={today}&end={today}"))) == 3
    yesterday = today - timedelta(days=1)
    assert _csv(client.get(f"/benchmarks/products/{product.pk}/verdicts.csv?end={yesterday}")) == []
    bad = client.get(f"/benchmarks/products/{product.pk}/verdicts.csv?start={today}&end={yesterday}")
    assert bad.status_code == 400 and "comes after its last day" in bad.content.decode()
    assert client.get(f"/benchmarks/products/{product.pk}/verdicts.csv?start=31.02.2026").status_code == 400


def test_history_pages_newest_first_and_nothing_is_editable(padim_part, admin_account, reviewer_account,
                                                             annotator_account, client, settings):
    part = padim_part
    product = part.product
    settings.DEFECTBENCH_DATA_ROOTS = [*settings.DEFECTBENCH_DATA_ROOTS, str(settings.MEDIA_ROOT)]
    deployment = deploy.deploy(part, part.report["selection"]["chosen"], admin_account)
    job = _inspect(part, reviewer_account, ["a.png", "b.png"])
    verdict = InspectionVerdict.objects.filter(job=job).order_by("index").first()
    mark = feedback.mark(verdict, "correct", reviewer_account, note="checked")
    feedback.add_to_dataset(verdict, reviewer_account)
    image = product.images.filter(is_anomalous=True, origin=Image.Origin.DATASET).first()
    save_label(image=image, annotator=annotator_account, background=True, category="surface", source="test")

    client.force_login(reviewer_account)
    page = client.get(f"/benchmarks/products/{product.pk}/history/").content.decode()
    for text in (f"Deployment #{deployment.pk}: run #{part.run_id}", "Label created on", f"Inspection #{job.pk}",
                 "2 verdicts", "Marked correct: a.png", "checked", "Added a.png"):
        assert text in page, text
    # Newest first: the label change came last.
    assert page.index("Label created on") < page.index("Added a.png") < page.index("Marked correct") \
        < page.index(f"Inspection #{job.pk}") < page.index(f"Deployment #{deployment.pk}")
    # The page shows no form that changes the trail (only the export, a GET).
    main = page[page.index("<main"):page.index("</main>")]
    assert 'method="post"' not in main.lower() and 'id="verdicts-export"' in main

    # Keyset pages: two events a page walk the whole history once, newest to oldest.
    seen, cursor = [], None
    while True:
        events, cursor = trail.history_page(product, cursor, limit=2)
        seen += [(e.what, e.pk) for e in events]
        if cursor is None:
            break
    everything, _ = trail.history_page(product, None, limit=100)
    assert seen == [(e.what, e.pk) for e in everything] and len(seen) >= 5
    assert client.get(f"/benchmarks/products/{product.pk}/history/?after=nonsense").status_code == 400

    # Annotators see neither the trail nor the export.
    client.force_login(annotator_account)
    assert client.get(f"/benchmarks/products/{product.pk}/history/").status_code == 403
    assert client.get(f"/benchmarks/products/{product.pk}/verdicts.csv").status_code == 403

    # The admin shows the rows and refuses every change.
    client.force_login(admin_account)
    for model, row in (("inspectionverdict", verdict), ("inspectionfeedback", mark)):
        url = f"/admin/inference/{model}/{row.pk}/change/"
        shown = client.get(url)
        assert shown.status_code == 200 and 'name="_save"' not in shown.content.decode()
        assert client.post(url, {"kind": "false_alarm", "note": "edited", "name": "edited"}).status_code == 403
        assert client.post(f"/admin/inference/{model}/{row.pk}/delete/", {"post": "yes"}).status_code == 403
        assert client.get(f"/admin/inference/{model}/add/").status_code == 403
    mark.refresh_from_db()
    verdict.refresh_from_db()
    assert mark.kind == "correct" and mark.note == "checked" and verdict.name == "a.png"
    assert InspectionFeedback.objects.count() == 1
