"""Unaligned products: the launch form's counts warn when a position-specific model is picked, and
the pre-run advice starts with PatchCore instead of PaDiM."""
import pytest

from annotator.services import alignment
from inference.engine import registry
from inference.services import recommendation
from tests.annotator.test_alignment import aligned_and_scattered

pytestmark = pytest.mark.django_db

POSITION_SPECIFIC = [m.name for m in registry.MODELS.values() if m.position_specific]


@pytest.fixture
def measured(tmp_path, settings):
    settings.DEFECTBENCH_DATA_ROOTS = [tmp_path]
    dataset = aligned_and_scattered(tmp_path)
    for product in dataset.products.all():
        alignment.measure_alignment(product.pk)
    return dataset


def counts(api, dataset, models):
    ids = ",".join(str(p.pk) for p in dataset.products.order_by("name"))
    response = api.get(f"/api/benchmarks/subset-counts/?dataset={dataset.pk}&products={ids}&models={models}")
    assert response.status_code == 200, response.content
    return response.json()


def test_counts_warn_about_position_specific_models_on_the_unaligned_product(measured, admin_api):
    assert POSITION_SPECIFIC  # PaDiM, the VAE and CFLOW by the registry
    body = counts(admin_api, measured, ",".join(POSITION_SPECIFIC + ["patchcore"]))
    assert len(body["warnings"]) == 1
    warning = body["warnings"][0]
    assert warning.startswith("scattered: its defect-free images are not aligned")
    assert all(registry.label(name) in warning for name in POSITION_SPECIFIC) and "try PatchCore" in warning
    assert not any("not aligned" in problem for problem in body["problems"])  # a warning, not a refusal
    by_name = {row["name"]: row["alignment"] for row in body["products"]}
    assert by_name["scattered"]["aligned"] is False and by_name["aligned"]["aligned"] is True
    # Only position-free models picked: nothing to warn about.
    assert counts(admin_api, measured, "patchcore,reconstruction")["warnings"] == []
    assert counts(admin_api, measured, "padim")["warnings"][0].startswith("scattered:")


def test_an_unknown_model_is_refused_naming_it(measured, admin_api):
    response = admin_api.get(f"/api/benchmarks/subset-counts/?dataset={measured.pk}"
                             f"&products={measured.products.first().pk}&models=nonsense")
    assert response.status_code == 400 and "nonsense" in str(response.json())


def test_starting_advice_suggests_patchcore_when_not_aligned(measured):
    scattered = recommendation.recommend(measured.products.get(name="scattered"))
    assert scattered["source"] == "advice" and scattered["model"] == "patchcore"
    assert "not aligned" in scattered["reason"] and "start with PatchCore" in scattered["reason"]
    assert "PaDiM" in scattered["reason"]  # says why not the usual starting point
    aligned = recommendation.recommend(measured.products.get(name="aligned"))
    assert aligned["model"] == "padim" and "not aligned" not in aligned["reason"]


def test_product_page_shows_the_patchcore_advice(measured, client, annotator_account):
    scattered = measured.products.get(name="scattered")
    client.force_login(annotator_account)
    html = client.get(f"/benchmarks/products/{scattered.pk}/").content.decode()
    assert "are not aligned" in html and "start with PatchCore" in html
