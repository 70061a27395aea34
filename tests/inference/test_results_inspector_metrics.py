"""AUPIMO, defect regions found and false alarms per good image on the results page and in the CSV."""
import dataclasses

import numpy as np
import pytest
from django.urls import reverse

from inference.engine import evaluation
from inference.engine.pimo import PerImageOverlap
from inference.engine.regions import DefectRegions, region_detection
from tests.inference.engine.test_engine_pimo import HALF_THEN_ONE
from tests.inference.engine.test_engine_pimo import _hand_example as aupimo_case
from tests.inference.engine.test_engine_regions import THRESHOLD
from tests.inference.engine.test_engine_regions import _hand_case as regions_case
from tests.inference.results_pages import page_and_csv, store_report


def _technique_row(html: str, technique: str) -> str:
    start = html.index(f'data-technique="{technique}"')
    return html[start:html.index("</tr>", start)]


@pytest.mark.django_db
def test_results_page_and_csv_show_what_an_inspector_counts_and_aupimo(padim_part, client, admin_account):
    run, report = padim_part.run, padim_part.report
    client.force_login(admin_account)
    html, csv_rows = page_and_csv(client, run)
    # the run's own counts, for every technique (64-pixel demo images: too few good pixels for AUPIMO)
    assert "Defect regions found" in html and "False alarms per good image" in html
    for name, result in report["techniques"].items():
        regions = result["regions"]
        row = _technique_row(html, name)
        assert f"{regions['found']} of {regions['defect_regions']} regions" in row, name
        assert f"{regions['false_alarm_regions']} on {regions['good_images']} good images" in row, name
        cells = csv_rows[name]
        assert (int(cells["defect_regions_found"]), int(cells["defect_regions"])) == (
            regions["found"], regions["defect_regions"])
        assert float(cells["false_alarms_per_good_image"]) == pytest.approx(
            regions["false_alarms_per_good_image"]["value"])
    assert "AUPIMO: not reported, needs at least 100,000 defect-free pixels" in html
    assert csv_rows[report["selection"]["chosen"]]["aupimo"] == ""

    # The hand-computed examples of the engine tests, as the report carries them: what the page and
    # the CSV show is that arithmetic (AUPIMO 0.761, 0 and 1; 2 of 3 regions; 2 alarms on 2 good images).
    maps, masks, labels = aupimo_case()
    overlap = PerImageOverlap(maps, masks, labels)
    resampler = evaluation.Resampler(labels, seed=0, resamples=200)
    report["test_part"]["aupimo"] = dataclasses.asdict(
        resampler.estimate(overlap.mean(), overlap.mean_resamples(resampler.weights)))
    report["aupimo"] = {"fpr_low": 1e-5, "fpr_high": 1e-4, "n_images": 3, **overlap.quantiles(), "note": ""}
    maps, masks, anomalous = regions_case()
    counted = region_detection(DefectRegions(masks).at(maps, THRESHOLD), anomalous,
                               evaluation.Resampler(anomalous, seed=0, resamples=200))
    chosen = report["selection"]["chosen"]
    report["techniques"][chosen]["regions"] = dataclasses.asdict(counted)
    store_report(padim_part, report)

    html, csv_rows = page_and_csv(client, run)
    mean = (HALF_THEN_ONE + 0 + 1) / 3
    assert f"AUPIMO (FPR 1e-5–1e-4)</span><strong>{mean:.3f}" in html
    assert (f"AUPIMO per anomalous test image (3 images, FPR 1e-5–1e-4 of the defect-free ones): median "
            f"{HALF_THEN_ONE:.3f}, quartiles {HALF_THEN_ONE / 2:.3f}–{(HALF_THEN_ONE + 1) / 2:.3f}, range 0.000–1.000") in html
    row = _technique_row(html, chosen)
    assert "0.667" in row and "2 of 3 regions" in row and "1.00" in row and "2 on 2 good images" in row
    cells = csv_rows[chosen]
    assert float(cells["aupimo"]) == pytest.approx(mean) and float(cells["aupimo_median"]) == pytest.approx(HALF_THEN_ONE)
    assert float(cells["aupimo_low"]) <= mean <= float(cells["aupimo_high"])
    assert (cells["defect_regions_found"], cells["defect_regions"]) == ("2", "3")
    assert float(cells["detection_rate"]) == pytest.approx(2 / 3) and float(cells["false_alarms_per_good_image"]) == 1.0
    assert np.isclose(float(csv_rows["f1"]["aupimo"]), mean)  # a test-part number: the same on every row


@pytest.mark.django_db
def test_the_decision_comes_first_with_threshold_value_catch_and_reject_rates(padim_part, client, admin_account):
    """The results page opens with the decision: model, threshold rule and value, parts caught and
    rejected and the outline IoU with their intervals, and the next step, before any table."""
    from inference.engine.report import estimate_text

    run, report = padim_part.run, padim_part.report
    client.force_login(admin_account)
    html = client.get(reverse("benchmark-detail", args=[run.pk])).content.decode()
    card_at = html.index('class="card decision-card"')
    assert card_at < html.index("technique-table") and card_at < html.index("Threshold-free")
    card = html[card_at:html.index("</div>\n", html.index("next-step", card_at))]
    chosen = report["selection"]["chosen"]
    result = report["techniques"][chosen]
    assert f'data-decision-technique="{chosen}"' in card
    assert f"{result['threshold']:.3f}" in card
    recall = report["image_decision"]["test"]["recall"]
    assert "Defective parts caught" in card and "Good parts rejected" in card
    assert estimate_text(recall).split(" ")[0] in card and "[" in card  # with its interval
    assert f"Rests on {report['few_shot']['n_available']} labelled defect" in card
    assert "Next:" in card and 'href="#deploy-' in card
