"""The home page as a status board: per dataset and product, how far labelling is, what is open
for the viewer, the disagreements waiting for a reviewer, and what other apps add (the benchmark
side adds its last run, its decision and the deployed model through :func:`add_product_section`).

It takes the same queries at 100 and 100 000 images: one aggregate over the images of every
product, one count of the open disagreements (partial index), one read of the viewer's progress
rows (kept on every label change), one count of others' fresh claims, and one call per registered
section with every product at once. Nothing is counted image by image in Python; the aggregate
itself still reads each product's image rows (a few hundred ms at 200 000 images on SQLite).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable

from django.db.models import Count, Q
from django.utils import timezone

from annotator.models import LABELLABLE, NEEDS_MASK, AnnotatorProgress, Claim, Dataset, Image, Product, User, on_related
from annotator.services import review
from annotator.services.nothing_left import NothingLeft, reasons
from annotator.services.queue import claim_timeout

# name -> provider(products, user) -> {product id: what the section shows}. Apps register at start
# (their AppConfig.ready): the labelling side names none of them, so it imports nothing of theirs.
ProductSection = Callable[[list[Product], User], dict[int, object]]
_product_sections: dict[str, ProductSection] = {}


def add_product_section(name: str, provider: ProductSection) -> None:
    """Add ``provider``'s entry to every product row as ``row.sections[name]`` (called once per board
    with every product, so it too must cost the same whatever the number of images)."""
    _product_sections[name] = provider


@dataclass
class ProductRow:
    product: Product
    train_good: int
    test_good: int
    anomalous: int
    to_label: int        # anomalous test images with a mask: only those are labelled
    labelled: int        # of those, with every label the dataset's overlap asks for
    disagreements: int   # annotators disagree and no reviewer has decided yet
    open_to_viewer: int  # short of labels and not labelled by the viewer
    sections: dict = field(default_factory=dict)
    needs_mask: int = 0  # anomalous images without a mask: image-level evidence until one is drawn

    @property
    def labelled_percent(self) -> int:
        return round(100 * self.labelled / self.to_label) if self.to_label else 0


@dataclass
class DatasetRow:
    dataset: Dataset
    products: list[ProductRow]
    state: NothingLeft  # the queue's "nothing left" figures for the viewer, over the whole dataset

    @property
    def image_count(self) -> int:
        return sum(r.train_good + r.test_good + r.anomalous for r in self.products)

    @property
    def to_label(self) -> int:
        return self.state.images

    @property
    def labelled(self) -> int:
        return self.state.complete

    @property
    def labelled_percent(self) -> int:
        return round(100 * self.labelled / self.to_label) if self.to_label else 0

    @property
    def disagreements(self) -> int:
        return sum(r.disagreements for r in self.products)

    @property
    def open_to_viewer(self) -> int:
        return sum(r.open_to_viewer for r in self.products)

    @property
    def nothing_to_label(self) -> bool:
        return self.open_to_viewer == 0

    @property
    def nothing_to_label_reasons(self) -> list[str]:
        """Why the viewer's queue is empty, in the queue page's own words."""
        return reasons(self.state) if self.nothing_to_label else []


_LABELLED = on_related("images__", LABELLABLE)


def board(user: User, *, archived: bool = False) -> list[DatasetRow]:
    datasets = list(Dataset.objects.filter(archived=archived).order_by("name"))
    products = list(
        Product.objects.filter(dataset__in=datasets).select_related("dataset").order_by("dataset__name", "name")
        .annotate(
            train_good=Count("images", filter=Q(images__split=Image.Split.TRAIN)),
            test_good=Count("images", filter=Q(images__split=Image.Split.TEST, images__is_anomalous=False)),
            anomalous=Count("images", filter=Q(images__is_anomalous=True)),
            to_label=Count("images", filter=_LABELLED),
            labelled=Count("images", filter=_LABELLED & Q(images__needs_labels=False)),
            needing=Count("images", filter=_LABELLED & Q(images__needs_labels=True)),
            needs_mask=Count("images", filter=on_related("images__", NEEDS_MASK)),
        )
    )
    # Apart, as the review page counts them: the partial index on ``disagrees`` answers it in under
    # a millisecond, where joining the review decisions into the aggregate above made every image
    # row pay for the join (about twice the aggregate's time).
    open_disagreements = dict(
        review.disagreements().filter(product__in=products).order_by().values("product_id")
        .annotate(n=Count("pk")).values_list("product_id", "n")
    )
    progress = {row.product_id: row for row in AnnotatorProgress.objects.filter(annotator=user, product__in=products)}
    held = dict(
        Claim.objects.filter(image__product__in=products, image__split=Image.Split.TEST, image__is_anomalous=True,
                             image__needs_labels=True, claimed_at__gte=timezone.now() - claim_timeout())
        .exclude(annotator=user).order_by().values("image__product_id").annotate(n=Count("pk"))
        .values_list("image__product_id", "n")
    )
    sections = {name: provider(products, user) for name, provider in _product_sections.items()}

    by_dataset: dict[int, list[ProductRow]] = defaultdict(list)
    for product in products:
        mine = progress.get(product.pk)
        by_dataset[product.dataset_id].append(ProductRow(
            product=product, train_good=product.train_good, test_good=product.test_good, anomalous=product.anomalous,
            to_label=product.to_label, labelled=product.labelled,
            disagreements=open_disagreements.get(product.pk, 0),
            # the viewer's labels on images still short of labels are kept as ``waiting``
            open_to_viewer=max(0, product.needing - (mine.waiting if mine else 0)),
            sections={name: found.get(product.pk) for name, found in sections.items()},
            needs_mask=product.needs_mask,
        ))
    rows = []
    for dataset in datasets:
        product_rows = by_dataset.get(dataset.pk, [])
        state = NothingLeft(
            images=sum(r.to_label for r in product_rows), complete=sum(r.labelled for r in product_rows),
            mine=sum(progress[r.product.pk].done for r in product_rows if r.product.pk in progress),
            held=sum(held.get(r.product.pk, 0) for r in product_rows), overlap=dataset.label_overlap,
        )
        rows.append(DatasetRow(dataset=dataset, products=product_rows, state=state))
    return rows
