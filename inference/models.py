"""Benchmark jobs: one ``BenchmarkRun`` per launch, one ``ProductRun`` per product it covers.

A run over several products fans out one Celery task per product (a chord); each ``ProductRun``
carries its own status, progress, heartbeat and report, and the run carries the aggregate.
The labels a run used are snapshotted in ``RunSample`` rows at launch, so relabelling images
later never silently changes what an old run measured.
"""
from pathlib import Path

from django.conf import settings
from django.db import models
from django.utils import timezone

from annotator.models import Dataset, Image, Label, Product
from inference.engine import registry
from inference.engine.thresholds import NEEDS_ANOMALOUS, TECHNIQUES


class Status(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


TERMINAL_STATUSES = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)
ACTIVE_STATUSES = (Status.QUEUED, Status.RUNNING)


# The engine's model registry is the one list of models; ``ModelName.PADIM`` etc. follow it.
ModelName = models.TextChoices("ModelName", [(m.name.upper(), (m.name, m.label)) for m in registry.MODELS.values()])


# The engine's threshold techniques are the one list; ``Technique.NORMAL_FPR`` etc. follow it.
Technique = models.TextChoices("Technique", [(name.upper(), (name, spec.label)) for name, spec in TECHNIQUES.items()])


# Techniques that fit their threshold on anomalous images (the others need no labelled defect):
# the engine's strategies say which.
TECHNIQUES_NEEDING_ANOMALOUS = NEEDS_ANOMALOUS


class BenchmarkRun(models.Model):
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="benchmark_runs",
    )
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="benchmark_runs")
    products = models.ManyToManyField(Product, through="ProductRun", related_name="benchmark_runs")
    # Label subset of the anomalous test images: empty list = every category ("all anomalous").
    categories = models.JSONField(default=list, blank=True)
    # True/False: only anomalous images labelled with / without background; None: either.
    background = models.BooleanField(null=True, blank=True)
    model = models.CharField(max_length=16, choices=ModelName.choices)
    # Engine settings besides model/seed/techniques: backbone, image_size, epochs, n_features, ...
    config = models.JSONField(default=dict, blank=True)
    techniques = models.JSONField(default=list)
    seed = models.IntegerField(default=0)

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    stage = models.CharField(max_length=64, blank=True, default="")
    progress = models.FloatField(default=0.0, help_text="0..100")
    # The current stage's sub-steps as the engine reports them (images done, CFLOW epoch and
    # losses, rate, eta_seconds); for the run page while the run is active.
    detail = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    cancel_requested = models.BooleanField(default=False)

    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # The task id of the single-product task, or of the chord's aggregate callback.
    celery_task_id = models.CharField(max_length=255, blank=True, default="")
    # Aggregate over products: {"aggregate": {...}, "products": {name: summary}}.
    metrics = models.JSONField(null=True, blank=True)
    # Relative to MEDIA_ROOT ("benchmarks/<id>"); served only through login-checked views.
    artifacts_path = models.CharField(max_length=512, blank=True, default="")
    retry_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="retries"
    )

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"Run {self.pk} ({self.model}, {self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    @property
    def duration_seconds(self) -> float | None:
        if not self.started_at:
            return None
        end = self.finished_at or timezone.now()
        return max(0.0, (end - self.started_at).total_seconds())

    @property
    def artifacts_root(self) -> Path:
        return Path(settings.MEDIA_ROOT) / (self.artifacts_path or f"benchmarks/{self.pk}")

    def settings_summary(self) -> str:
        """The run's recorded engine settings, named as the model registry names them (the tile
        settings only for a run in tiles)."""
        config = self.config or {}
        skip = () if config.get("resize") == "tiles" else registry.TILE_SETTINGS
        return ", ".join(f"{registry.SETTINGS[k].title.lower()} {v}" for k, v in config.items()
                         if k in registry.SETTINGS and k not in skip)

    @property
    def family_label(self) -> str:
        spec = registry.MODELS.get(self.model)
        return registry.FAMILIES[spec.family].split(" (")[0] if spec else ""

    def subset_description(self) -> str:
        cats = ", ".join(self.categories) if self.categories else "all categories"
        if self.background is None:
            bg = "any background"
        else:
            bg = "with background" if self.background else "without background"
        return f"{cats}; {bg}"


class ProductRun(models.Model):
    """The part of a run covering one product: one Celery task, one engine report."""

    run = models.ForeignKey(BenchmarkRun, on_delete=models.CASCADE, related_name="product_runs")
    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="+")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    stage = models.CharField(max_length=64, blank=True, default="")
    progress = models.FloatField(default=0.0, help_text="0..100")
    detail = models.JSONField(null=True, blank=True)  # as BenchmarkRun.detail
    error = models.TextField(blank=True, default="")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    celery_task_id = models.CharField(max_length=255, blank=True, default="")
    # How many times a worker started this part (>1 after a redelivery).
    attempts = models.PositiveIntegerField(default=0)
    # Which worker process holds it now ("host:pid"), for the console.
    worker = models.CharField(max_length=255, blank=True, default="")
    report = models.JSONField(null=True, blank=True)
    # Relative to MEDIA_ROOT ("benchmarks/<run id>/<product run id>").
    artifacts_path = models.CharField(max_length=512, blank=True, default="")
    # The fitted model kept as a package (inference.engine.package), relative to MEDIA_ROOT;
    # blank when the run kept none (failed, or made before packages existed).
    package_path = models.CharField(max_length=512, blank=True, default="")

    class Meta:
        ordering = ["run", "product__name"]
        constraints = [
            models.UniqueConstraint(fields=["run", "product"], name="one_product_run_per_product")
        ]

    def __str__(self) -> str:
        return f"{self.run} / {self.product.name}"

    @property
    def artifacts_root(self) -> Path:
        return Path(settings.MEDIA_ROOT) / (self.artifacts_path or f"benchmarks/{self.run_id}/{self.pk}")


class RunSample(models.Model):
    """Snapshot, at launch, of one image a product run uses and the label it counts with."""

    class Role(models.TextChoices):
        TRAIN = "train", "Train (defect-free)"
        TEST = "test", "Test"

    product_run = models.ForeignKey(ProductRun, on_delete=models.CASCADE, related_name="samples")
    image = models.ForeignKey(Image, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    role = models.CharField(max_length=8, choices=Role.choices)
    # Absolute paths at launch time.
    path = models.CharField(max_length=1024)
    mask_path = models.CharField(max_length=1024, blank=True, default="")
    defect_type = models.CharField(max_length=100)
    is_anomalous = models.BooleanField(default=False)
    background = models.BooleanField(null=True, blank=True)
    category = models.CharField(max_length=16, choices=Label.Category.choices, blank=True, default="")
    # Where the image's annotators disagreed: the share of them who chose each category
    # ({"surface": 0.5, "structural": 0.5}) and each background value ({"true": 1.0}); null where
    # they agreed. ``background`` / ``category`` above stay the final label.
    category_shares = models.JSONField(null=True, blank=True)
    background_shares = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["product_run", "role", "id"]


class Deployment(models.Model):
    """One decision to deploy a run's model with one threshold technique as a product's inspector.

    Append-only history: the product's deployed inspector is its newest row; rolling back adds a
    row that repeats an earlier choice (``rollback_of``), so who chose what and when stays readable.
    """

    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="deployments")
    product_run = models.ForeignKey(ProductRun, on_delete=models.PROTECT, related_name="deployments")
    technique = models.CharField(max_length=32, choices=Technique.choices)
    deployed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="+")
    deployed_at = models.DateTimeField(default=timezone.now)
    note = models.CharField(max_length=500, blank=True, default="")
    rollback_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["-deployed_at", "-id"]
        indexes = [models.Index(fields=["product", "-deployed_at", "-id"], name="deployment_latest")]

    def __str__(self) -> str:
        return f"{self.product} <- run {self.product_run.run_id} ({self.technique})"


class InspectionJob(models.Model):
    """New images inspected with a product's deployed model: one upload (done at once) or one batch
    (a folder or zip, a Celery task with progress and cancel). Results live in ``results``, one
    entry per image; the PNGs in ``MEDIA_ROOT/<artifacts_path>``."""

    class Kind(models.TextChoices):
        UPLOAD = "upload", "Uploaded images"
        BATCH = "batch", "Batch (folder or zip)"

    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="inspection_jobs")
    deployment = models.ForeignKey(Deployment, on_delete=models.PROTECT, related_name="jobs")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Written every few seconds while it runs; the sweep settles a running job whose worker stopped.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    progress = models.FloatField(default=0.0, help_text="0..100")
    error = models.TextField(blank=True, default="")
    cancel_requested = models.BooleanField(default=False)
    # Batch: the folder (absolute, inside the data roots) or the extracted zip's folder.
    source = models.CharField(max_length=1024, blank=True, default="")
    total = models.PositiveIntegerField(default=0)
    results = models.JSONField(default=list, blank=True)
    inference_ms_per_image = models.FloatField(null=True, blank=True)
    artifacts_path = models.CharField(max_length=512, blank=True, default="")
    celery_task_id = models.CharField(max_length=255, blank=True, default="")

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["product", "-created_at", "-id"], name="inspection_job_product_time")]

    def __str__(self) -> str:
        return f"Inspection {self.pk} of {self.product} ({self.status})"

    @property
    def artifacts_root(self) -> Path:
        return Path(settings.MEDIA_ROOT) / (self.artifacts_path or f"inspections/{self.pk}")


class InspectionVerdict(models.Model):
    """One image's verdict on the line, as it was made: the audit trail of inspection.

    Written once when the image's inspection ends and never changed (no edit or delete through the
    UI, the API or the admin): it names the deployment *and* what made the verdict — the package's
    SHA-256 (of its manifest, which pins the weights' own hash, the settings and the thresholds),
    both thresholds and the engine version — so a verdict stays traceable after a redeploy, even
    if the run's package folder is later replaced. Scores feed the drift check; feedback refers to
    these rows.
    """

    job = models.ForeignKey(InspectionJob, on_delete=models.PROTECT, related_name="verdicts")
    # The job's position of the image (unique per job: writing the verdicts twice adds nothing).
    index = models.PositiveIntegerField()
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="inspection_verdicts")
    deployment = models.ForeignKey(Deployment, on_delete=models.PROTECT, related_name="verdicts")
    name = models.CharField(max_length=1024)
    defective = models.BooleanField()
    score = models.FloatField()
    image_threshold = models.FloatField()
    technique = models.CharField(max_length=32, choices=Technique.choices)
    pixel_threshold = models.FloatField()
    defect_area_fraction = models.FloatField()
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    package_sha256 = models.CharField(max_length=64)
    engine_version = models.CharField(max_length=16)
    inspected_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="+")
    # The user's name as it was: the trail still says who after the account is renamed or removed.
    inspected_by_name = models.CharField(max_length=150, blank=True, default="")
    inspected_at = models.DateTimeField()

    class Meta:
        ordering = ["-inspected_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["job", "index"], name="one_verdict_per_job_image")]
        indexes = [
            models.Index(fields=["product", "-inspected_at"], name="verdict_product_time"),
            models.Index(fields=["deployment", "-inspected_at"], name="verdict_deployment_time"),
        ]

    def __str__(self) -> str:
        return f"{self.name}: {'defective' if self.defective else 'good'} ({self.deployment})"


class FeedbackKind(models.TextChoices):
    """A reviewer's mark on one verdict: the one vocabulary of feedback (pages, API, CSV, rates)."""

    CORRECT = "correct", "Correct"
    FALSE_ALARM = "false_alarm", "False alarm"
    MISSED_DEFECT = "missed_defect", "Missed defect"


class InspectionFeedback(models.Model):
    """A reviewer's mark on a verdict. Append-only: marking again adds a row, and the newest row of a
    verdict is the one the rates count (``DeploymentTally``); older rows stay as they were."""

    verdict = models.ForeignKey(InspectionVerdict, on_delete=models.PROTECT, related_name="feedback")
    # The verdict's product and deployment, repeated so the product's trail reads by index.
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="+")
    deployment = models.ForeignKey(Deployment, on_delete=models.PROTECT, related_name="+")
    kind = models.CharField(max_length=16, choices=FeedbackKind.choices)
    note = models.CharField(max_length=500, blank=True, default="")
    # The reviewer's outline of the defect as a binary PNG, relative to MEDIA_ROOT; blank when none
    # was drawn.
    outline_path = models.CharField(max_length=512, blank=True, default="")
    marked_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                  related_name="+")
    marked_by_name = models.CharField(max_length=150, blank=True, default="")
    marked_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-marked_at", "-id"]
        indexes = [
            models.Index(fields=["verdict", "-marked_at", "-id"], name="feedback_verdict_latest"),
            models.Index(fields=["product", "-marked_at", "-id"], name="feedback_product_time"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} on verdict {self.verdict_id} by {self.marked_by_name}"


class DatasetAddition(models.Model):
    """An inspected image a reviewer added to its product's dataset (once per verdict), after the
    mark it followed: which image row it became, as what, by whom and when. Append-only."""

    verdict = models.OneToOneField(InspectionVerdict, on_delete=models.PROTECT, related_name="addition")
    feedback = models.ForeignKey(InspectionFeedback, on_delete=models.PROTECT, related_name="+")
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="+")
    # SET_NULL: the trail outlives an image removed with its dataset's cleanup.
    image = models.ForeignKey(Image, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    image_path = models.CharField(max_length=1024)
    split = models.CharField(max_length=8, choices=Image.Split.choices)
    is_anomalous = models.BooleanField()
    with_mask = models.BooleanField()
    added_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                 related_name="+")
    added_by_name = models.CharField(max_length=150, blank=True, default="")
    added_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-added_at", "-id"]
        indexes = [models.Index(fields=["product", "-added_at", "-id"], name="addition_product_time")]


class DeploymentTally(models.Model):
    """Counts per deployment, kept as verdicts and marks are written, so the product page reads its
    rates from a few rows at any number of inspected images.

    ``kind`` blank: images inspected with the verdict ``defective``; a feedback kind: verdicts whose
    newest mark is of that kind (a newer mark moves its verdict from one row to another).
    """

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="tallies")
    defective = models.BooleanField()
    kind = models.CharField(max_length=16, choices=FeedbackKind.choices, blank=True, default="")
    count = models.IntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["deployment", "defective", "kind"], name="one_tally_per_cell")]
