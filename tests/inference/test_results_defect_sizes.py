"""Defect size on the results page and in the CSV: per size class the chosen technique's detection
rate (regions covered >= 30 %), and the classes missed more often flagged."""
import dataclasses

import pytest
from django.utils.html import escape

from inference.engine import evaluation
from inference.engine.regions import SIZE_CLASSES, DefectRegions, region_detection
from inference.services.reports import CSV_COLUMNS, SIZE_COLUMNS
from tests.inference.engine.test_engine_regions import THRESHOLD, _flag_case
from tests.inference.results_pages import page_and_csv, store_report


def _sizes_table(html: str) -> str:
    start = html.index('class="grid metrics defect-sizes"')
    return html[start:html.index("</table>", start)]


@pytest.mark.django_db
def test_results_page_and_csv_show_the_detection_rate_per_defect_size(padim_part, client, admin_account):
    run, report = padim_part.run, padim_part.report
    client.force_login(admin_account)
    chosen = report["selection"]["chosen"]
    # the run's own classes: every class on the page with its count, in the CSV for every technique
    html, csv_rows = page_and_csv(client, run)
    table = _sizes_table(html)
    for c in report["techniques"][chosen]["regions"]["by_size"]:
        row = table[table.index(f'data-size-class="{escape(c["size_class"])}"'):]
        assert f'<td class="num">{c["regions"]}</td>' in row[:row.index("</tr>")]
    assert sum(c["regions"] for c in report["techniques"][chosen]["regions"]["by_size"]) == \
        report["techniques"][chosen]["regions"]["defect_regions"]
    for name, result in report["techniques"].items():
        for c in result["regions"]["by_size"]:
            assert int(csv_rows[name][f"{SIZE_COLUMNS[c['size_class']]}_regions"]) == c["regions"]

    # The engine test's case (1-pixel defects never predicted, 2 % ones always), as the report carries it.
    maps, masks, anomalous = _flag_case()
    counted = region_detection(DefectRegions(masks).at(maps, THRESHOLD), anomalous,
                               evaluation.Resampler(anomalous, seed=0, resamples=500))
    report["techniques"][chosen]["regions"] = dataclasses.asdict(counted)
    store_report(padim_part, report)

    html, csv_rows = page_and_csv(client, run)
    assert ("Defects of &lt; 0.1 %, 0.1–1 % of the image are missed more often: detected 0.000 "
            '<span class="ci"') in html
    table = _sizes_table(html)
    assert table.count('class="size-missed"') == 2 and table.count("missed more often") == 2
    small = table[table.index('data-size-class="&lt; 0.1 %"'):]
    small = small[:small.index("</tr>")]
    assert 'class="size-missed"' in small and '<td class="num">12</td>' in small and 'value="0.0000"' in small
    large = table[table.index('data-size-class="1–10 %"'):]
    assert "missed more often" not in large[:large.index("</tr>")] and 'value="1.0000"' in large
    assert "no regions" in table  # ≥ 10 %: none in this case
    # no inline style or script (CSP): the bar is a <meter>, the flag a class
    assert "style=" not in table and "<script" not in table

    cells = csv_rows[chosen]
    assert [c for c in CSV_COLUMNS if c.startswith("size_under_0.1pct")] == [
        f"size_under_0.1pct_{k}" for k in ("regions", "detected", "detection_rate", "detection_rate_low",
                                           "detection_rate_high", "lower_than_best")]
    assert len(SIZE_COLUMNS) == len(SIZE_CLASSES)
    assert (cells["size_under_0.1pct_regions"], cells["size_under_0.1pct_detected"]) == ("12", "0")
    assert float(cells["size_under_0.1pct_detection_rate"]) == 0.0
    assert cells["size_under_0.1pct_lower_than_best"] == "True"
    assert (cells["size_1_10pct_detection_rate"], cells["size_1_10pct_lower_than_best"]) == ("1.0", "False")
    assert float(cells["size_0.1_1pct_detection_rate"]) == 0.5
    assert cells["size_10pct_up_regions"] == "0" and cells["size_10pct_up_detection_rate"] == ""


def test_cli_summary_flags_the_size_classes_missed_more_often():
    from inference.management.commands.benchmark import size_lines

    maps, masks, anomalous = _flag_case()
    counted = region_detection(DefectRegions(masks).at(maps, THRESHOLD), anomalous,
                               evaluation.Resampler(anomalous, seed=0, resamples=500))
    report = {"selection": {"chosen": "f1"}, "techniques": {"f1": {"regions": dataclasses.asdict(counted)}}}
    (line,) = size_lines(report)
    assert line.startswith("Defect size (f1; regions covered >= 30% by the prediction, per share of the image): ")
    assert "< 0.1 % 0/12 0.000 [0.000, 0.000]  MISSED MORE OFTEN; " in line
    assert "0.1–1 % 6/12 0.500 [" in line and "1–10 % 12/12 1.000 [1.000, 1.000]" in line
    assert line.count("MISSED MORE OFTEN") == 2 and "≥ 10 %" not in line  # no regions: left out
    # a report made before the size classes: no line
    assert size_lines({"selection": {"chosen": "f1"}, "techniques": {"f1": {"regions": {}}}}) == []


@pytest.mark.django_db
def test_a_report_made_before_the_size_classes_shows_no_size_table(padim_part, client, admin_account):
    run, report = padim_part.run, padim_part.report
    for result in report["techniques"].values():
        result["regions"].pop("by_size", None)  # schema 4 before the field existed
    store_report(padim_part, report)
    client.force_login(admin_account)
    html, csv_rows = page_and_csv(client, run)
    assert "technique-table" in html and "defect-sizes" not in html
    assert csv_rows[report["selection"]["chosen"]]["size_under_0.1pct_regions"] == ""


def test_a_report_made_before_the_mask_counts_renders_as_current(padim_part, client, admin_account):
    """Issue 21: schema 5 only added ``masks`` and ``per_image[].has_mask``; a schema-4 report (every
    anomalous image had a mask) still shows its numbers, and no "needs masks" anywhere."""
    run, report = padim_part.run, padim_part.report
    report["schema_version"] = 4
    report.pop("masks")
    for entry in report["per_image"]:
        entry.pop("has_mask")
    store_report(padim_part, report)
    client.force_login(admin_account)
    html, csv_rows = page_and_csv(client, run)
    assert "technique-table" in html and "older version" not in html
    assert "needs masks" not in html and "mask-coverage" not in html
    chosen = csv_rows[report["selection"]["chosen"]]
    assert chosen["pixel_auroc"] not in ("", "needs masks") and chosen["pixel_metrics_on"] == ""
