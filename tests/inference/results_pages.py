"""What the results-page tests share: the page and its CSV for a run, and a report put in place."""
import csv
import io

from django.urls import reverse

from inference.services.reports import summary


def page_and_csv(client, run):
    """The run's results page and its CSV's whole-part rows by technique."""
    html = client.get(reverse("benchmark-detail", args=[run.pk])).content.decode()
    rows = list(csv.DictReader(io.StringIO(client.get(reverse("benchmark-download", args=[run.pk, "csv"])).content.decode())))
    return html, {r["technique"]: r for r in rows if r["subset"] == "all"}


def store_report(part, report) -> None:
    """``report`` as the part's report and in its run's metrics, as a finished run holds it."""
    part.report = report
    part.save(update_fields=["report"])
    part.run.metrics["products"][part.product.name] = summary(report)
    part.run.save(update_fields=["metrics"])
