"""What the benchmark side shows of a product on the home board and first on the product page:
its last run, the decision of its latest succeeded run (model and threshold technique) and the
deployed model.

The board's section reads every product at once in three queries whatever the number of images,
runs or products (newest rows by subquery, reports' chosen technique by a JSON key, never the
reports themselves); it is added to the labelling side's board in ``InferenceConfig.ready``, so
the labelling app does not import this one.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import OuterRef, QuerySet, Subquery
from django.db.models.fields.json import KT

from annotator.models import Product
from inference.engine import registry
from inference.engine.report import SCHEMA_VERSION
from inference.models import Deployment, ProductRun, Status
from inference.services.reports import TECHNIQUE_LABELS

NEWEST_RUN_FIRST = ("-run__created_at", "-run_id")
NEWEST_DEPLOYMENT_FIRST = ("-deployed_at", "-id")  # as ``deploy.current`` reads it


def decided_parts() -> QuerySet[ProductRun]:
    """Product runs whose report can say what to deploy: succeeded, made by this version."""
    return ProductRun.objects.filter(status=Status.SUCCEEDED, report__schema_version=SCHEMA_VERSION)


def latest_decided_part(product: Product) -> ProductRun | None:
    """The product's newest run part with a current report (the product page's decision card)."""
    return decided_parts().filter(product=product).select_related("run").order_by(*NEWEST_RUN_FIRST).first()


@dataclass(frozen=True)
class RunRef:
    run_id: int
    status: str
    status_label: str
    when: datetime  # finished, else started, else created


@dataclass(frozen=True)
class Decision:
    run_id: int
    model_label: str
    technique_label: str | None  # None: no technique could be fitted on this run


@dataclass(frozen=True)
class Deployed:
    run_id: int
    model_label: str
    technique_label: str
    deployed_at: datetime


@dataclass(frozen=True)
class ProductBenchmarks:
    last_run: RunRef | None
    decision: Decision | None
    deployed: Deployed | None


def _newest(parts: QuerySet[ProductRun]) -> Subquery:
    return Subquery(parts.filter(product=OuterRef("pk")).order_by(*NEWEST_RUN_FIRST).values("pk")[:1])


def product_benchmarks(products: list[Product], user=None) -> dict[int, ProductBenchmarks]:
    """{product id: its last run, latest decision and deployment} for every product, in three queries."""
    picks = list(
        Product.objects.filter(pk__in=[p.pk for p in products]).order_by().annotate(
            last=_newest(ProductRun.objects.all()), decided=_newest(decided_parts()),
            deployment=Subquery(Deployment.objects.filter(product=OuterRef("pk"))
                                .order_by(*NEWEST_DEPLOYMENT_FIRST).values("pk")[:1]),
        ).values_list("pk", "last", "decided", "deployment")
    )
    part_ids = {i for _, last, decided, _ in picks for i in (last, decided) if i}
    parts = {
        p.pk: p for p in ProductRun.objects.filter(pk__in=part_ids).select_related("run")
        .only("status", "started_at", "finished_at", "run__model", "run__status", "run__created_at",
              "run__started_at", "run__finished_at")
        .annotate(chosen=KT("report__selection__chosen"))
    }
    deployments = {
        d.pk: d for d in Deployment.objects.filter(pk__in=[d for *_, d in picks if d]).select_related("product_run__run")
        .only("technique", "deployed_at", "product_run__run__model")
    }
    found = {}
    for product_id, last, decided, deployment in picks:
        run_part, decided_part, deployed = parts.get(last), parts.get(decided), deployments.get(deployment)
        found[product_id] = ProductBenchmarks(
            last_run=RunRef(
                run_id=run_part.run_id, status=run_part.run.status, status_label=run_part.run.get_status_display(),
                when=run_part.run.finished_at or run_part.run.started_at or run_part.run.created_at,
            ) if run_part else None,
            decision=Decision(
                run_id=decided_part.run_id, model_label=registry.label(decided_part.run.model),
                technique_label=TECHNIQUE_LABELS.get(decided_part.chosen, decided_part.chosen) if decided_part.chosen else None,
            ) if decided_part else None,
            deployed=Deployed(
                run_id=deployed.product_run.run_id, model_label=registry.label(deployed.product_run.run.model),
                technique_label=TECHNIQUE_LABELS.get(deployed.technique, deployed.technique),
                deployed_at=deployed.deployed_at,
            ) if deployed else None,
        )
    return found
