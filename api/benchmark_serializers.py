"""Serializers of benchmark runs (read) and of a launch request (write)."""
from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from annotator.models import Label
from annotator.paths import without_server_paths
from api.serializers import CommaListField, id_field
from inference.engine import registry
from inference.services import runs
from inference.models import BenchmarkRun, FeedbackKind, ModelName, ProductRun, Status, Technique


class ErrorTextField(serializers.CharField):
    """An error stored with a run or job (often an exception's text): absolute server paths in it
    are named by their place in the data roots, as on the pages."""

    def to_representation(self, value):
        return without_server_paths(super().to_representation(value))


class ProductRunSerializer(serializers.ModelSerializer):
    product = serializers.CharField(source="product.name")
    product_id = serializers.IntegerField()
    error = ErrorTextField(read_only=True)

    class Meta:
        model = ProductRun
        fields = ["id", "product_id", "product", "status", "stage", "progress", "detail", "error", "attempts",
                  "worker", "started_at", "finished_at", "heartbeat_at"]


class BenchmarkRunSerializer(serializers.ModelSerializer):
    dataset = serializers.CharField(source="dataset.name")
    created_by = serializers.SerializerMethodField()
    parts = ProductRunSerializer(source="product_runs", many=True, read_only=True)
    duration_seconds = serializers.FloatField(read_only=True, allow_null=True, help_text="null until the run starts")
    subset = serializers.CharField(source="subset_description", read_only=True)
    urls = serializers.SerializerMethodField()
    error = ErrorTextField(read_only=True)

    class Meta:
        model = BenchmarkRun
        fields = ["id", "dataset", "dataset_id", "model", "config", "techniques", "seed", "categories",
                  "background", "subset", "status", "stage", "progress", "detail", "error", "cancel_requested",
                  "created_by", "created_at", "started_at", "finished_at", "heartbeat_at",
                  "duration_seconds", "retry_of", "parts", "urls"]

    def get_created_by(self, run) -> str | None:
        return run.created_by.username if run.created_by else None

    def get_urls(self, run) -> dict[str, str]:
        return {
            "self": reverse("api-benchmark-run", args=[run.pk]),
            "page": reverse("benchmark-detail", args=[run.pk]),
            "cancel": reverse("api-benchmark-cancel", args=[run.pk]),
            "retry": reverse("api-benchmark-retry", args=[run.pk]),
            "json": reverse("benchmark-download", args=[run.pk, "json"]),
            "csv": reverse("benchmark-download", args=[run.pk, "csv"]),
        }


class BenchmarkRunDetailSerializer(BenchmarkRunSerializer):
    class Meta(BenchmarkRunSerializer.Meta):
        fields = BenchmarkRunSerializer.Meta.fields + ["metrics", "artifacts"]

    artifacts = serializers.SerializerMethodField()

    def get_artifacts(self, run) -> list[str]:
        """URLs of the artifact files (served to logged-in users only; annotators: the curves)."""
        root = run.artifacts_root
        if not root.is_dir():
            return []
        request = self.context.get("request")
        if request is not None and not runs.sees_per_image_results(request.user):
            return [
                reverse("benchmark-file", args=[run.pk, path.relative_to(root).as_posix()])
                for path in sorted(root.rglob("*"))
                if path.is_file() and runs.is_aggregate_artifact(path.relative_to(root).as_posix())
            ][:2000]
        return [
            reverse("benchmark-file", args=[run.pk, path.relative_to(root).as_posix()])
            for path in sorted(root.rglob("*")) if path.is_file()
        ][:2000]


class LaunchSerializer(serializers.Serializer):
    dataset = id_field()
    products = serializers.ListField(child=id_field(), allow_empty=False)
    categories = serializers.ListField(
        child=serializers.ChoiceField(choices=Label.Category.choices), required=False, default=list
    )
    background = serializers.CharField(required=False, allow_null=True, allow_blank=True, default=None,
                                       help_text="yes, no or any (default)")
    model = serializers.ChoiceField(
        choices=ModelName.choices, default=registry.DEFAULT_MODEL,
        help_text="; ".join(f"{m.name}: {m.label} ({registry.FAMILIES[m.family].split(' (')[0]}), {m.summary}"
                            for m in registry.MODELS.values()))
    techniques = serializers.ListField(
        child=serializers.ChoiceField(choices=Technique.choices), required=False, default=list
    )
    seed = serializers.IntegerField(required=False, default=0, min_value=0, max_value=runs.SEED_MAX)
    config = serializers.DictField(
        required=False, default=dict,
        help_text="engine settings (the model registry's; blank = default): " + "; ".join(
            f"{s.name} ({s.kind.__name__}, default {s.default}): {s.help}" for s in registry.SETTINGS.values()))

    def to_internal_value(self, data):
        # Booleans are welcome for background ("true"/"false" arrive as strings anyway).
        if hasattr(data, "get") and isinstance(data.get("background"), bool):
            data = dict(data)
            data["background"] = "yes" if data["background"] else "no"
        return super().to_internal_value(data)


class DeploymentSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    run = serializers.IntegerField(source="product_run.run_id")
    product_run = serializers.IntegerField(source="product_run_id")
    model = serializers.CharField(source="product_run.run.model")
    technique = serializers.CharField()
    deployed_by = serializers.CharField(source="deployed_by.username", default=None)
    deployed_at = serializers.DateTimeField()
    note = serializers.CharField()
    rollback_of = serializers.IntegerField(source="rollback_of_id", allow_null=True)


class DeploymentsSerializer(serializers.Serializer):
    current = DeploymentSerializer(allow_null=True)
    history = DeploymentSerializer(many=True)


class DeployRequestSerializer(serializers.Serializer):
    run = id_field(help_text="benchmark run id (its part on this product is deployed)")
    technique = serializers.ChoiceField(choices=Technique.choices, required=False,
                                        help_text="threshold technique; default: the run's chosen one")
    note = serializers.CharField(required=False, allow_blank=True, max_length=500)


class InspectRequestSerializer(serializers.Serializer):
    images = serializers.ListField(child=serializers.FileField(), help_text="one or several image files")


class ComponentSerializer(serializers.Serializer):
    bbox = serializers.ListField(child=serializers.IntegerField(), help_text="x0, y0, x1, y1 in the image's pixels")
    area_fraction = serializers.FloatField()
    peak = serializers.FloatField()


class InspectedImageSerializer(serializers.Serializer):
    name = serializers.CharField()
    verdict = serializers.ChoiceField(choices=["defective", "good"], required=False)
    score = serializers.FloatField(required=False)
    image_threshold = serializers.FloatField(required=False)
    technique = serializers.CharField(required=False)
    pixel_threshold = serializers.FloatField(required=False)
    defect_area_fraction = serializers.FloatField(required=False)
    components = ComponentSerializer(many=True, required=False)
    inference_ms = serializers.FloatField(required=False)
    map_low = serializers.FloatField(required=False, help_text="anomaly score of grey level 0 in the map PNG")
    map_high = serializers.FloatField(required=False, help_text="anomaly score of grey level 255 in the map PNG")
    urls = serializers.DictField(child=serializers.CharField(), required=False)
    verdict_id = serializers.IntegerField(required=False, help_text="the image's audit row (InspectionVerdict), "
                                                                     "which feedback is posted to")
    error = serializers.CharField(required=False)


class InspectionJobSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    product = serializers.IntegerField(source="product_id")
    deployment = serializers.IntegerField(source="deployment_id")
    kind = serializers.CharField()
    status = serializers.CharField()
    progress = serializers.FloatField()
    error = ErrorTextField()
    total = serializers.IntegerField()
    inference_ms_per_image = serializers.FloatField(allow_null=True)
    results = serializers.SerializerMethodField()
    urls = serializers.SerializerMethodField()

    @extend_schema_field(InspectedImageSerializer(many=True))
    def get_results(self, job):
        verdicts = dict(job.verdicts.values_list("index", "id"))
        out = []
        for entry in job.results:
            entry = dict(entry)
            if entry.get("error"):
                entry["error"] = without_server_paths(entry["error"])
            files = entry.pop("files", None)
            if files:
                entry["urls"] = {k: reverse("inspection-file", args=[job.pk, v]) for k, v in files.items()}
            if (verdict := verdicts.get(entry.get("index"))) is not None:
                entry["verdict_id"] = verdict
                entry.setdefault("urls", {}).update(
                    feedback=reverse("api-verdict-feedback", args=[verdict]),
                    add_to_dataset=reverse("api-verdict-add", args=[verdict]))
            out.append(entry)
        return out

    def get_urls(self, job) -> dict[str, str]:
        return {"self": reverse("api-inspection", args=[job.pk]), "page": reverse("inspection-detail", args=[job.pk]),
                "csv": reverse("inspection-csv", args=[job.pk])}


class BatchRequestSerializer(serializers.Serializer):
    folder = serializers.CharField(required=False, allow_blank=True, help_text="a folder inside the data roots")
    zip = serializers.FileField(required=False, help_text="a zip of images")


class RunQuerySerializer(serializers.Serializer):
    status = CommaListField(child=serializers.ChoiceField(choices=Status.values), required=False)


class SubsetCountsQuerySerializer(serializers.Serializer):
    dataset = id_field(required=False)
    products = CommaListField(child=id_field(), required=False)
    # Categories, techniques and background are checked by the launch rules (same messages as a launch).
    categories = CommaListField(child=serializers.CharField(), required=False)
    background = serializers.CharField(required=False, allow_blank=True)
    techniques = CommaListField(child=serializers.CharField(), required=False)
    models = CommaListField(child=serializers.CharField(), required=False)


# ---- feedback and the audit trail ------------------------------------------------------------------

class FeedbackRequestSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=FeedbackKind.choices)
    note = serializers.CharField(required=False, allow_blank=True, max_length=500)
    outline = serializers.ListField(
        child=serializers.ListField(child=serializers.FloatField(), min_length=2, max_length=2),
        required=False, allow_empty=True, max_length=1000,
        help_text="the defect's outline: a polygon of (x, y) points in the pixels of the inspected picture "
                  "(the image PNG of the inspection, at the model's size); not for a false alarm")


class FeedbackSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    verdict = serializers.IntegerField(source="verdict_id")
    kind = serializers.ChoiceField(choices=FeedbackKind.choices)
    note = serializers.CharField()
    has_outline = serializers.SerializerMethodField()
    marked_by = serializers.CharField(source="marked_by_name")
    marked_at = serializers.DateTimeField()

    def get_has_outline(self, feedback) -> bool:
        return bool(feedback.outline_path)


class DatasetAdditionSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    verdict = serializers.IntegerField(source="verdict_id")
    image = serializers.IntegerField(source="image_id", allow_null=True)
    image_path = serializers.CharField()
    split = serializers.CharField()
    is_anomalous = serializers.BooleanField()
    with_mask = serializers.BooleanField()
    added_by = serializers.CharField(source="added_by_name")
    added_at = serializers.DateTimeField()


class VerdictSerializer(serializers.Serializer):
    """One inspected image's verdict as it was made, and its newest mark (``feedback``, or null)."""

    id = serializers.IntegerField()
    job = serializers.IntegerField(source="job_id")
    index = serializers.IntegerField()
    name = serializers.CharField()
    deployment = serializers.IntegerField(source="deployment_id")
    run = serializers.IntegerField(source="deployment.product_run.run_id")
    package_sha256 = serializers.CharField()
    engine_version = serializers.CharField()
    technique = serializers.CharField()
    image_threshold = serializers.FloatField()
    pixel_threshold = serializers.FloatField()
    score = serializers.FloatField()
    verdict = serializers.SerializerMethodField()
    defect_area_fraction = serializers.FloatField()
    inspected_by = serializers.CharField(source="inspected_by_name")
    inspected_at = serializers.DateTimeField()
    feedback = serializers.SerializerMethodField()

    def get_verdict(self, row) -> str:
        return "defective" if row.defective else "good"

    @extend_schema_field(FeedbackSerializer(allow_null=True))
    def get_feedback(self, row):
        latest = self.context.get("latest", {}).get(row.pk)
        return FeedbackSerializer(latest).data if latest else None
