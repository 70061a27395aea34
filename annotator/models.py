"""The labelling domain: datasets, products, images and the labels annotators give them."""
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.db import models, transaction

from annotator.paths import added_images_root, mask_file, validate_data_root, validate_relative_path



class BackgroundStatus(models.TextChoices):
    """The states of the labelling side's background work (dataset imports, nearest references)."""

    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


ACTIVE_BACKGROUND_STATUSES = (BackgroundStatus.QUEUED, BackgroundStatus.RUNNING)


class User(AbstractUser):
    class Role(models.TextChoices):
        ADMIN = "admin", "Admin"
        REVIEWER = "reviewer", "Reviewer"
        ANNOTATOR = "annotator", "Annotator"

    role = models.CharField(max_length=16, choices=Role.choices, default=Role.ANNOTATOR)

    @property
    def is_admin_role(self) -> bool:
        return self.is_superuser or self.role == self.Role.ADMIN

    @property
    def is_reviewer_role(self) -> bool:
        """Reviewers settle disagreements; admins may do everything a reviewer does."""
        return self.is_admin_role or self.role == self.Role.REVIEWER


class Dataset(models.Model):
    class Layout(models.TextChoices):
        MVTEC = "mvtec", "MVTec AD"
        BTAD = "btad", "BTAD"
        FOLDER = "folder", "Plain folder"
        BESIDE = "beside", "Masks beside images"
        MANIFEST = "manifest", "Manifest (CSV / JSON lines)"
        POLYGONS = "polygons", "LabelMe / COCO annotations"

    name = models.CharField(max_length=200, unique=True)
    layout = models.CharField(max_length=16, choices=Layout.choices)
    # Absolute path of the folder the images are referenced in (never copied).
    root = models.CharField(max_length=1024, unique=True, validators=[validate_data_root])
    # How many different annotators must label each anomalous image.
    label_overlap = models.PositiveSmallIntegerField(default=1)
    # Show annotators the dataset's defect folder ("broken_large") in the workspace. It can prime
    # them toward a category, so a dataset may hide it.
    show_defect_folder = models.BooleanField(default=True)
    # Label assist: the workspace pre-selects a category suggested from the mask and the pixels
    # (annotator.services.suggestions), learned from the dataset's labels. Off unless an admin turns
    # it on: a suggestion can anchor annotators, which the dashboard then measures.
    suggest_categories = models.BooleanField(default=False)
    # Archived: kept (labels, runs), but off the datasets page until unarchived.
    archived = models.BooleanField(default=False)
    # Options the dataset was imported with (mask suffix/extension, good folders, mask threshold,
    # split seed and test share); a re-import reuses them unless told otherwise.
    import_options = models.JSONField(default=dict, blank=True)
    # CSV (path,problem) of the files the last import left out (--skip-invalid, duplicates).
    problem_report = models.TextField(blank=True, default="")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._saved_overlap = self.label_overlap

    def save(self, *args, **kwargs):
        if self.label_overlap == self._saved_overlap:
            super().save(*args, **kwargs)
            return
        from annotator.services.dataset_settings import apply_overlap

        # The overlap and what it decides (which images still need labels, every annotator's
        # progress counters) change together or not at all, whoever saves it (page, admin, code):
        # interrupted half-way, the counters showed 0 done for good.
        with transaction.atomic():
            super().save(*args, **kwargs)
            apply_overlap(self)
        self._saved_overlap = self.label_overlap

    @property
    def root_path(self) -> Path:
        return Path(self.root)


def place_name(dataset_name: str, product_names) -> str:
    """Where something is, as pages' headings and breadcrumbs say it: "mvtec / bottle, cable", or
    just "bottle" when a dataset's only product has the dataset's name (never "bottle / bottle")."""
    names = list(product_names)
    if not names or names == [dataset_name]:
        return dataset_name
    return f"{dataset_name} / {', '.join(names)}"


class Product(models.Model):
    class Kind(models.TextChoices):
        OBJECT = "object", "Object on a backdrop"
        TEXTURE = "texture", "Texture filling the frame"

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="products")
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.OBJECT)

    class Meta:
        ordering = ["dataset__name", "name"]
        constraints = [
            models.UniqueConstraint(fields=["dataset", "name"], name="unique_product_per_dataset")
        ]

    def __str__(self) -> str:
        return f"{self.dataset.name}/{self.name}"

    @property
    def place_name(self) -> str:
        return place_name(self.dataset.name, [self.name])

    @property
    def suggested_background(self) -> bool:
        """What the workspace pre-fills (never submits unconfirmed): objects sit on a backdrop."""
        return self.kind == self.Kind.OBJECT


# The images annotators label: anomalous test images WITH a mask (a defect category is read off
# the defect's outline). An anomalous image without a mask is image-level evidence only; it
# enters the queue once it gets a mask (``annotator.services.masks.save_drawn_mask``). The one
# definition: the queue's partial index, its SQL, the progress counts and the checks derive from it.
LABELLABLE = models.Q(split="test", is_anomalous=True) & ~models.Q(mask_path="")
# Anomalous images without a mask (the summaries' "needs a mask" counts).
NEEDS_MASK = models.Q(is_anomalous=True, mask_path="")


class Image(models.Model):
    class Split(models.TextChoices):
        TRAIN = "train", "Train"
        TEST = "test", "Test"

    class Origin(models.TextChoices):
        # A file of the dataset's folder, referenced in place (every imported image).
        DATASET = "dataset", "Dataset folder"
        # DefectBench's own copy of an inspected image a reviewer added from inspection feedback,
        # under the media root (``paths.added_images_root``): the user's folder is never written.
        INSPECTION = "inspection", "Added from inspection"

    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="images")
    split = models.CharField(max_length=8, choices=Split.choices)
    is_anomalous = models.BooleanField(default=False)
    # The dataset's own defect type ("good", "broken_large", "ko", ...).
    defect_type = models.CharField(max_length=100)
    origin = models.CharField(max_length=16, choices=Origin.choices, default=Origin.DATASET)
    # Paths relative to ``files_root`` (the dataset root for imported images), with forward slashes.
    path = models.CharField(max_length=1024, validators=[validate_relative_path])
    mask_path = models.CharField(max_length=1024, blank=True, default="", validators=[validate_relative_path])
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    checksum = models.CharField(max_length=64, help_text="SHA-256 of the image file")
    created_at = models.DateTimeField(auto_now_add=True)
    # Kept by annotator.services.labels on every label change (and by Dataset.save when the
    # overlap changes) so the queue finds an open image with one indexed query at any size.
    label_count = models.PositiveIntegerField(default=0, editable=False)
    needs_labels = models.BooleanField(default=True, editable=False)
    # Its annotators gave different labels (background or category): a reviewer should settle it.
    disagrees = models.BooleanField(default=False, editable=False)

    class Meta:
        ordering = ["product", "split", "defect_type", "path"]
        constraints = [
            models.UniqueConstraint(fields=["product", "path"], name="unique_image_path_per_product")
        ]
        indexes = [
            models.Index(fields=["product", "split", "is_anomalous"]),
            # The queue's walk: the product's anomalous test images still short of labels, in order.
            models.Index(
                fields=["product", "defect_type", "path"], name="image_queue_open_masked",
                condition=LABELLABLE & models.Q(needs_labels=True),
            ),
            models.Index(fields=["product", "path"], name="image_disagrees", condition=models.Q(disagrees=True)),
            # The mask editor's list: the product's anomalous images that came without a mask.
            models.Index(fields=["product", "defect_type", "path"], name="image_needs_mask",
                         condition=models.Q(is_anomalous=True, mask_path="")),
        ]

    def __str__(self) -> str:
        return self.path

    @property
    def display_path(self) -> str:
        """The path a person reads: it starts with the product once (paths of multi-product
        datasets already do, "widget/test/..."; those of a one-product folder do not)."""
        prefix = f"{self.product.name}/"
        return self.path if self.path.startswith(prefix) else prefix + self.path

    def files_root_in(self, dataset_root: Path) -> Path:
        """The folder ``path`` and ``mask_path`` are relative to, given the dataset's root (callers
        walking many images of one dataset pass it instead of reading it per image)."""
        return added_images_root(self.product_id) if self.origin == self.Origin.INSPECTION else Path(dataset_root)

    @property
    def files_root(self) -> Path:
        return self.files_root_in(self.product.dataset.root_path)

    @property
    def is_labellable(self) -> bool:
        """``LABELLABLE`` for this row: an anomalous test image with a mask."""
        return self.split == self.Split.TEST and self.is_anomalous and bool(self.mask_path)

    @property
    def needs_mask(self) -> bool:
        return self.is_anomalous and not self.mask_path

    @property
    def file_path(self) -> Path:
        return self.files_root / self.path

    @property
    def mask_file_path(self) -> Path | None:
        """The mask file to decode: ``mask_path`` in the dataset, or the mask rasterised from the
        annotation file ``mask_path`` names (LabelMe, COCO) under the media root."""
        return mask_file(self.files_root, self.path, self.mask_path) if self.mask_path else None


class Label(models.Model):
    class Category(models.TextChoices):
        STRUCTURAL = "structural", "Structural"
        SURFACE = "surface", "Surface"
        CONTAMINATION = "contamination", "Contamination"
        COMBINED = "combined", "Combined"

    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="labels")
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="labels"
    )
    # True: the product sits on a backdrop; False: a close-up texture fills the frame.
    background = models.BooleanField()
    category = models.CharField(max_length=16, choices=Category.choices)
    # The workspace started with this background already selected, carried over from the
    # annotator's previous label of the product, and the annotator submitted it unchanged (their
    # confirmation); False when they chose it on this image (or the label came from elsewhere).
    background_carried = models.BooleanField(default=False)
    # The category the workspace suggested (pre-selected) when the annotator first submitted this
    # label; "" when it showed none. Kept through later corrections, like ``background_carried``.
    suggested_category = models.CharField(max_length=16, choices=Category.choices, blank=True, default="")
    # The first submission kept the suggestion (confirmed it, usually with Enter).
    suggestion_taken = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["image", "annotator"]
        constraints = [
            models.UniqueConstraint(fields=["image", "annotator"], name="one_label_per_annotator")
        ]
        indexes = [models.Index(fields=["annotator", "created_at"], name="label_by_annotator_time")]

    def __str__(self) -> str:
        return f"{self.image} by {self.annotator}: {self.category}"


class LabelHistory(models.Model):
    """Append-only record of every label change; rows are never updated or deleted."""

    class Action(models.TextChoices):
        CREATED = "created", "Created"
        UPDATED = "updated", "Updated"
        DELETED = "deleted", "Deleted"

    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="label_history")
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    action = models.CharField(max_length=16, choices=Action.choices)
    # {"background": bool, "category": str} or null.
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    source = models.CharField(max_length=32, default="workspace")
    # On the entry that created a label: the category the workspace suggested then ("" for none).
    suggested_category = models.CharField(max_length=16, choices=Label.Category.choices, blank=True, default="")
    changed_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["changed_at", "id"]
        verbose_name_plural = "label history"
        # A product's audit trail pages through its label changes newest first.
        indexes = [models.Index(fields=["-changed_at", "-id"], name="label_history_newest")]

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise ValidationError("Label history is append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValidationError("Label history is append-only.")


class Claim(models.Model):
    """An annotator is working on an image: the queue hands it to nobody else while it is fresh.

    A claim older than ``DEFECTBENCH_CLAIM_TIMEOUT_SECONDS`` (default 600) counts as abandoned and
    no longer holds the image; submitting a label removes the claim. An annotator holds at most
    one claim (the database refuses a second).
    """

    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="claims")
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="claims"
    )
    claimed_at = models.DateTimeField()

    class Meta:
        ordering = ["claimed_at", "id"]
        constraints = [
            # One image at a time: a new claim replaces the annotator's previous one.
            models.UniqueConstraint(fields=["annotator"], name="one_claim_per_annotator_at_a_time")
        ]
        indexes = [models.Index(fields=["image", "claimed_at"]), models.Index(fields=["claimed_at"])]

    def __str__(self) -> str:
        return f"{self.image} claimed by {self.annotator}"


class Skip(models.Model):
    """An annotator skipped an image; the queue offers it to them again only when nothing else is left."""

    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="skips")
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="skips"
    )
    skipped_at = models.DateTimeField()

    class Meta:
        ordering = ["skipped_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["image", "annotator"], name="one_skip_per_annotator")
        ]

    def __str__(self) -> str:
        return f"{self.image} skipped by {self.annotator}"


class ReviewDecision(models.Model):
    """A reviewer's final label for an image; it overrides whatever the annotators gave."""

    image = models.OneToOneField(Image, on_delete=models.CASCADE, related_name="review_decision")
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="review_decisions"
    )
    background = models.BooleanField()
    category = models.CharField(max_length=16, choices=Label.Category.choices)
    note = models.TextField(blank=True, default="")
    decided_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-decided_at", "id"]

    def __str__(self) -> str:
        return f"{self.image}: {self.category} (review by {self.reviewer})"


class DefectBookEntry(models.Model):
    """A labelled image a reviewer pinned to a category of a dataset's defect book, as inspection
    teams keep one: an example of the category, a counter-example (it looks like one, it is not)
    or a borderline case, with a note saying why. The labelling workspace shows a category's
    entries beside its definition; ``annotator.services.defect_book`` pins and reads them.

    ``dataset`` is its image's dataset (the service refuses any other): the book is read by
    dataset and category, through the index below, at any dataset size.
    """

    class Kind(models.TextChoices):
        EXAMPLE = "example", "Example"
        COUNTER_EXAMPLE = "counter-example", "Counter-example"
        BORDERLINE = "borderline", "Borderline"

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="defect_book")
    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="defect_book_entries")
    category = models.CharField(max_length=16, choices=Label.Category.choices)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    note = models.TextField(blank=True, default="")
    pinned_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    pinned_at = models.DateTimeField()

    class Meta:
        ordering = ["dataset", "category", "kind", "-pinned_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["dataset", "image", "category"], name="one_book_entry_per_image_category")
        ]
        indexes = [models.Index(fields=["dataset", "category", "kind", "-pinned_at"], name="defect_book_by_category")]
        verbose_name_plural = "defect book entries"

    def __str__(self) -> str:
        return f"{self.image} as {self.get_kind_display().lower()} of {self.category} in {self.dataset}"


class ImportJob(models.Model):
    """A zip upload imported by a Celery task; the row holds its state (progress, cancel flag)."""

    Status = BackgroundStatus

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    upload_path = models.CharField(max_length=1024)  # the stored zip, removed when the job ends
    # Where the job unpacks the zip (MEDIA_ROOT/datasets/<uuid>): the dataset's folder once imported,
    # removed when the job fails, is cancelled or its worker dies.
    unpacked_path = models.CharField(max_length=1024, blank=True, default="")
    file_name = models.CharField(max_length=255)
    options = models.JSONField(default=dict, blank=True)  # layout, name, skip_invalid ...
    done = models.PositiveIntegerField(default=0)
    total = models.PositiveIntegerField(default=0)
    stage = models.CharField(max_length=64, blank=True, default="")
    cancel_requested = models.BooleanField(default=False)
    messages = models.JSONField(default=list, blank=True)  # summary lines or problems
    dataset = models.ForeignKey(Dataset, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Written every few seconds while it runs; the sweep settles a running job whose worker stopped.
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.file_name} ({self.status})"

    @property
    def finished(self) -> bool:
        return self.status not in ACTIVE_BACKGROUND_STATUSES

class DatasetStatistics(models.Model):
    """A snapshot of a dataset's label statistics (agreement, distributions).

    Written only by the periodic task ``annotator.refresh_statistics`` (Celery beat), read by the
    dashboard and the agreement API, so reviewers' pages cost the same with 100 or 100 000 labels.
    ``history_mark`` is the newest label-history id the snapshot has seen.
    """

    dataset = models.OneToOneField(Dataset, on_delete=models.CASCADE, related_name="statistics")
    computed_at = models.DateTimeField()
    history_mark = models.BigIntegerField(default=0)
    data = models.JSONField()

    class Meta:
        verbose_name_plural = "dataset statistics"

    def __str__(self) -> str:
        return f"statistics of {self.dataset} at {self.computed_at:%Y-%m-%d %H:%M:%S}"


class AnnotatorProgress(models.Model):
    """Per annotator and product: images labelled (``done``) and, of those, images still short of
    labels from others (``waiting``). Kept by ``annotator.services.labels`` on every label change,
    so the workspace's progress is two row reads at any dataset size."""

    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="+")
    done = models.IntegerField(default=0)
    waiting = models.IntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["annotator", "product"], name="one_progress_row_per_annotator_product")
        ]


def on_related(prefix: str, q: models.Q) -> models.Q:
    """``q`` on a related model's fields (``LABELLABLE`` seen from a label: ``image__split``...)."""
    out = models.Q(*[on_related(prefix, child) if isinstance(child, models.Q) else (prefix + child[0], child[1])
                     for child in q.children], _connector=q.connector, _negated=q.negated)
    return out


def rebuild_annotator_progress(dataset: Dataset) -> None:
    """Recount every ``AnnotatorProgress`` row of ``dataset`` from its labels of labellable images
    (after an overlap change, or an import that changed which images have a mask)."""
    AnnotatorProgress.objects.filter(product__dataset=dataset).delete()
    rows = (
        Label.objects.filter(image__product__dataset=dataset).filter(on_related("image__", LABELLABLE)).order_by()
        .values("annotator_id", "image__product_id")
        .annotate(done=models.Count("id"), waiting=models.Count("id", filter=models.Q(image__needs_labels=True)))
    )
    AnnotatorProgress.objects.bulk_create([
        AnnotatorProgress(annotator_id=row["annotator_id"], product_id=row["image__product_id"],
                          done=row["done"], waiting=row["waiting"])
        for row in rows
    ])

class ReferenceIndex(models.Model):
    """Whether a product's nearest defect-free references are computed (one Celery task each)."""

    Status = BackgroundStatus

    product = models.OneToOneField(Product, on_delete=models.CASCADE, related_name="reference_index")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    weights = models.CharField(max_length=512, blank=True, default="")
    error = models.TextField(blank=True, default="")
    updated_at = models.DateTimeField(auto_now=True)
    # Written every few seconds while it is computed; the sweep fails a running one whose worker stopped.
    heartbeat_at = models.DateTimeField(null=True, blank=True)


class NearestReference(models.Model):
    """The defect-free training image nearest to an anomalous image in backbone feature space."""

    image = models.OneToOneField(Image, on_delete=models.CASCADE, related_name="nearest_reference")
    reference = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="+")
    distance = models.FloatField()


class ProductAlignment(models.Model):
    """How aligned a product's defect-free training images are (``inference.engine.alignment``),
    measured once per set of those images by the Celery task ``annotator.measure_alignment``.

    ``images_digest`` names the set it was measured on: a re-import that changes it is measured again."""

    Status = BackgroundStatus

    product = models.OneToOneField(Product, on_delete=models.CASCADE, related_name="alignment")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    images_digest = models.CharField(max_length=64, blank=True, default="")
    # Median over image pairs of r0² / r_best²: the share of the registered structure already in place.
    aligned_share = models.FloatField(null=True, blank=True)
    # Median r_best²: how much structure the images share at all once registered.
    layout = models.FloatField(null=True, blank=True)
    pairs = models.IntegerField(default=0)
    error = models.TextField(blank=True, default="")
    updated_at = models.DateTimeField(auto_now=True)


class MaskRevision(models.Model):
    """One version of an image's defect mask made in the mask editor; append-only.

    The file is DefectBench's own PNG under the media root (``file``, relative to it:
    ``drawn-masks/<dataset id>/<image id>/<number>.png``), never in the dataset's folder. The
    image's current mask is its newest revision: saving one points ``Image.mask_path`` at it
    (``annotator.paths.drawn_mask_path``), so display, export and benchmarks read it like any
    imported mask. ``origin`` says how it was made: the model's proposal saved unchanged, a
    proposal or an earlier mask corrected, or drawn from an empty canvas.
    """

    class Origin(models.TextChoices):
        PROPOSED = "proposed", "Proposed by a model"
        EDITED = "edited", "Edited"
        DRAWN = "drawn", "Drawn"

    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="mask_revisions")
    number = models.PositiveIntegerField()  # 1, 2, ... per image
    file = models.CharField(max_length=512)
    origin = models.CharField(max_length=16, choices=Origin.choices)
    # What the editor started from: the model that proposed it ("padim, run 12, f1 threshold"),
    # "revision 2", "the dataset's mask", or "" (an empty canvas).
    started_from = models.CharField(max_length=300, blank=True, default="")
    defect_pixels = models.PositiveBigIntegerField(default=0)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    previous = models.OneToOneField("self", null=True, blank=True, on_delete=models.CASCADE, related_name="next")

    class Meta:
        ordering = ["image", "-number"]
        constraints = [models.UniqueConstraint(fields=["image", "number"], name="one_mask_revision_number_per_image")]

    def __str__(self) -> str:
        return f"mask {self.number} of {self.image} ({self.origin})"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise ValidationError("Mask revisions are append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValidationError("Mask revisions are append-only.")


class ImageFeatures(models.Model):
    """An anomalous image's category-suggestion features (``annotator.suggestion_features``),
    computed once in the background and read by the workspace. ``key`` names what they were
    computed from (image and reference checksums, the mask file's version, the feature version):
    a row whose key no longer matches is not used, and is recomputed."""

    image = models.OneToOneField(Image, on_delete=models.CASCADE, related_name="suggestion_features")
    reference = models.ForeignKey(Image, null=True, on_delete=models.SET_NULL, related_name="+")
    key = models.CharField(max_length=64)
    # The feature vector in FEATURE_NAMES order; null for an image whose mask is empty.
    vector = models.JSONField(null=True)
    computed_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "image features"


class CategorySuggester(models.Model):
    """A dataset's fitted suggestion classifier, refitted by the beat task ``annotator.refresh_suggestions``
    when its labels changed (``history_mark``: the newest label-history id of the dataset it saw)."""

    dataset = models.OneToOneField(Dataset, on_delete=models.CASCADE, related_name="category_suggester")
    # SuggestionModel.to_json(); null while the dataset has too few labels to learn from.
    model = models.JSONField(null=True, blank=True)
    n_labels = models.IntegerField(default=0)
    history_mark = models.BigIntegerField(default=0)
    fitted_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
