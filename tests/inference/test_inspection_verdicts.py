"""Every inspected image leaves one audit row naming what made its verdict: the deployment, the
package's SHA-256, both thresholds, the engine version, who and when. A redeploy never rewrites
the verdicts made before it."""
import pytest

from inference.engine.package import ENGINE_VERSION, package_sha256
from inference.models import InspectionVerdict
from inference.services import deploy

pytestmark = pytest.mark.django_db


def _images(part, n=3):
    return [s.path for s in part.samples.filter(role="test")[:n]]


def test_verdicts_name_their_package_thresholds_and_inspector(padim_part, admin_account, reviewer_account):
    part = padim_part
    chosen = part.report["selection"]["chosen"]
    first = deploy.deploy(part, chosen, admin_account)
    paths = _images(part)
    job = deploy.inspect_uploads(part.product, [deploy.Upload(p.rsplit("/", 1)[-1], p) for p in paths],
                                 reviewer_account)

    rows = list(InspectionVerdict.objects.filter(job=job).order_by("index"))
    assert len(rows) == len(paths)
    sha = package_sha256(deploy.package_root(part))
    manifest = deploy.package_manifest(part)
    for row, entry in zip(rows, job.results):
        assert row.deployment_id == first.pk and row.product_id == part.product_id
        assert row.package_sha256 == sha and len(sha) == 64
        assert row.engine_version == ENGINE_VERSION
        assert row.technique == chosen
        assert row.pixel_threshold == pytest.approx(manifest["thresholds"]["pixel"][chosen]["value"])
        assert row.image_threshold == pytest.approx(entry["image_threshold"])
        assert row.score == pytest.approx(entry["score"]) and row.defective == entry["defective"]
        assert row.inspected_by == reviewer_account and row.inspected_by_name == reviewer_account.username
        assert row.inspected_at is not None

    # Writing them again (a redelivered task, a sweep after the worker ended it) adds nothing.
    assert deploy.record_verdicts(job.pk) == 0

    other = next(t for t in deploy.deployable_techniques(part) if t != chosen)
    second = deploy.deploy(part, other, admin_account)
    later = deploy.inspect_uploads(part.product, [deploy.Upload("again.png", paths[0])], reviewer_account)
    old = InspectionVerdict.objects.filter(job=job)
    assert set(old.values_list("deployment", flat=True)) == {first.pk}
    assert set(old.values_list("technique", flat=True)) == {chosen}
    new = InspectionVerdict.objects.get(job=later)
    assert new.deployment_id == second.pk and new.technique == other
    assert new.pixel_threshold == pytest.approx(manifest["thresholds"]["pixel"][other]["value"])
