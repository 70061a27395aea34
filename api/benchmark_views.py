"""Benchmark API views (thin: the rules live in inference.services)."""
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import generics, status
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from annotator.models import Dataset, Product
from api import benchmark_serializers as s
from rest_framework.pagination import CursorPagination
from rest_framework.parsers import MultiPartParser

from annotator.services.background import NothingToCancel
from api.parsers import JSONParser
from api.permissions import IsAdminRole, IsReviewerRole, ReadAnyWriteAdmin
from api.schema import DETAIL
from api.views import query
from inference.models import BenchmarkRun, InspectionJob, InspectionVerdict, ProductRun, Status
from inference.services import deploy, feedback, recommendation, runs


def _refused(error: runs.LaunchRefused) -> Response:
    return Response({"detail": " ".join(error.messages), "problems": error.messages},
                    status=status.HTTP_400_BAD_REQUEST)


# Cancelling a job that has ended changes nothing and says how it ended.
ALREADY_ENDED = OpenApiResponse(DETAIL, description="The job has already ended; nothing was changed.")


def _already_ended(error: NothingToCancel) -> Response:
    return Response({"detail": str(error)}, status=status.HTTP_409_CONFLICT)


def _runs_queryset():
    return BenchmarkRun.objects.select_related("dataset", "created_by").prefetch_related("product_runs__product")


@extend_schema_view(get=extend_schema(parameters=[OpenApiParameter("status", OpenApiTypes.STR, description=(
    "only runs in these statuses, comma-separated: " + ", ".join(Status.values)))]))
class RunListView(generics.ListCreateAPIView):
    """GET: benchmark runs, newest first (``?status=running``). POST (admins): launch a run."""

    permission_classes = [ReadAnyWriteAdmin]
    serializer_class = s.BenchmarkRunSerializer

    def get_queryset(self):
        queryset = _runs_queryset()
        if wanted := query(self.request, s.RunQuerySerializer).get("status"):
            queryset = queryset.filter(status__in=wanted)
        return queryset

    @extend_schema(request=s.LaunchSerializer, responses={201: s.BenchmarkRunDetailSerializer})
    def post(self, request, *args, **kwargs):
        launch = s.LaunchSerializer(data=request.data)
        launch.is_valid(raise_exception=True)
        data = launch.validated_data
        dataset = Dataset.objects.filter(pk=data["dataset"]).first()
        if dataset is None:
            raise ValidationError({"dataset": "No such dataset."})
        products = list(Product.objects.filter(pk__in=data["products"], dataset=dataset))
        missing = set(data["products"]) - {p.pk for p in products}
        if missing:
            raise ValidationError({"products": f"Not products of {dataset.name}: {sorted(missing)}."})
        try:
            run = runs.launch_run(
                request.user, dataset, products, categories=data["categories"],
                background=data["background"], model=data["model"], config=data["config"],
                techniques=data["techniques"], seed=data["seed"],
            )
        except runs.LaunchRefused as error:
            return _refused(error)
        except DjangoPermissionDenied as error:
            raise PermissionDenied(str(error))
        run = _runs_queryset().get(pk=run.pk)
        return Response(s.BenchmarkRunDetailSerializer(run).data, status=status.HTTP_201_CREATED)


class RunDetailView(generics.RetrieveAPIView):
    """One run with its status, progress, metrics and artifact URLs."""

    permission_classes = [IsAuthenticated]
    serializer_class = s.BenchmarkRunDetailSerializer

    def get_queryset(self):
        return _runs_queryset()


class CancelView(APIView):
    """Cancel a queued run at once, or ask a running one to stop at its next batch (a run whose
    worker stopped responding is cancelled at once); 409 for a run that has ended."""

    permission_classes = [IsAdminRole]

    @extend_schema(request=None, responses={200: s.BenchmarkRunSerializer, 409: ALREADY_ENDED})
    def post(self, request, pk):
        run = get_object_or_404(BenchmarkRun, pk=pk)
        try:
            run = runs.cancel_run(run, request.user)
        except NothingToCancel as error:
            return _already_ended(error)
        return Response(s.BenchmarkRunSerializer(_runs_queryset().get(pk=run.pk)).data)


class RetryView(APIView):
    """Launch a fresh run with the same dataset, products, subset and settings."""

    permission_classes = [IsAdminRole]

    @extend_schema(request=None, responses={201: s.BenchmarkRunSerializer})
    def post(self, request, pk):
        run = get_object_or_404(BenchmarkRun, pk=pk)
        try:
            new = runs.retry_run(run, request.user)
        except runs.LaunchRefused as error:
            return _refused(error)
        return Response(s.BenchmarkRunSerializer(_runs_queryset().get(pk=new.pk)).data,
                        status=status.HTTP_201_CREATED)


class SubsetCountsView(APIView):
    """How many images a launch with this subset would use, and why it would be refused."""

    permission_classes = [IsAdminRole]

    @extend_schema(parameters=[
        OpenApiParameter("dataset", OpenApiTypes.INT),
        OpenApiParameter("products", OpenApiTypes.STR, description="ids, comma-separated or repeated"),
        OpenApiParameter("categories", OpenApiTypes.STR),
        OpenApiParameter("background", OpenApiTypes.STR, description="yes, no or any"),
        OpenApiParameter("techniques", OpenApiTypes.STR),
        OpenApiParameter("models", OpenApiTypes.STR, description="the models picked, comma-separated: warns "
                         "when a position-specific one meets a product whose images are not aligned"),
    ], responses=OpenApiTypes.OBJECT)
    def get(self, request):
        params = query(request, s.SubsetCountsQuerySerializer)
        products = Product.objects.filter(pk__in=params.get("products", [])).order_by("name")
        if params.get("dataset"):
            products = products.filter(dataset_id=params["dataset"])
        try:
            counts = runs.subset_counts(
                list(products), categories=params.get("categories", []),
                background=runs.parse_background(params.get("background")),
                techniques=params.get("techniques", []), models=params.get("models", []),
            )
        except runs.LaunchRefused as error:
            return _refused(error)
        return Response(counts)


class RecommendationView(APIView):
    """Which model and threshold technique to deploy for a product, and why."""

    permission_classes = [IsAuthenticated]

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request, pk):
        product = get_object_or_404(Product, pk=pk)
        return Response(recommendation.recommend(product))


# ---- deployments and inspection ------------------------------------------------------------------

def _deploy_refused(error: deploy.DeployRefused) -> Response:
    return Response({"detail": " ".join(error.messages), "problems": error.messages},
                    status=status.HTTP_400_BAD_REQUEST)


def _deployments(product) -> dict:
    return {"current": deploy.current(product), "history": list(deploy.history(product))}


class DeploymentsView(APIView):
    """GET: the product's deployed inspector and the history of deployments. POST (admins): deploy
    a run's model with a threshold technique."""

    permission_classes = [ReadAnyWriteAdmin]

    @extend_schema(responses=s.DeploymentsSerializer)
    def get(self, request, pk):
        product = get_object_or_404(Product, pk=pk)
        return Response(s.DeploymentsSerializer(_deployments(product)).data)

    @extend_schema(request=s.DeployRequestSerializer, responses={201: s.DeploymentsSerializer})
    def post(self, request, pk):
        product = get_object_or_404(Product, pk=pk)
        body = s.DeployRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        part = ProductRun.objects.filter(run_id=body.validated_data["run"], product=product).select_related("product").first()
        if part is None:
            raise ValidationError({"run": f"Run {body.validated_data['run']} did not cover {product.name}."})
        technique = body.validated_data.get("technique") or ((part.report or {}).get("selection") or {}).get("chosen")
        try:
            deploy.deploy(part, technique or "", request.user, note=body.validated_data.get("note", ""))
        except deploy.DeployRefused as error:
            return _deploy_refused(error)
        return Response(s.DeploymentsSerializer(_deployments(product)).data, status=status.HTTP_201_CREATED)


class RollbackView(APIView):
    """Deploy an earlier deployment's run and technique again (a new history row)."""

    permission_classes = [IsAdminRole]

    @extend_schema(request=None, responses={201: s.DeploymentsSerializer})
    def post(self, request, pk, deployment):
        product = get_object_or_404(Product, pk=pk)
        try:
            deploy.rollback(product, deployment, request.user)
        except deploy.DeployRefused as error:
            return _deploy_refused(error)
        return Response(s.DeploymentsSerializer(_deployments(product)).data, status=status.HTTP_201_CREATED)


class InspectView(APIView):
    """Inspect new images (multipart field ``images``, one or several) with the product's deployed
    model: per image the verdict, score against the image threshold, defect area, components with
    boxes and peaks, and links to the anomaly map and predicted mask PNGs. Reviewers and admins."""

    permission_classes = [IsReviewerRole]
    parser_classes = [MultiPartParser]

    @extend_schema(request={"multipart/form-data": s.InspectRequestSerializer},
                   responses={201: s.InspectionJobSerializer})
    def post(self, request, pk):
        product = get_object_or_404(Product, pk=pk)
        try:
            uploads = deploy.read_uploads(request.FILES.getlist("images"))
            job = deploy.inspect_uploads(product, uploads, request.user)
        except deploy.DeployRefused as error:
            return _deploy_refused(error)
        return Response(s.InspectionJobSerializer(job).data, status=status.HTTP_201_CREATED)


class BatchInspectView(APIView):
    """Start a batch inspection of a folder (inside the data roots) or an uploaded zip (Celery job)."""

    permission_classes = [IsReviewerRole]
    parser_classes = [MultiPartParser, JSONParser]

    @extend_schema(request={"multipart/form-data": s.BatchRequestSerializer, "application/json": s.BatchRequestSerializer},
                   responses={201: s.InspectionJobSerializer})
    def post(self, request, pk):
        product = get_object_or_404(Product, pk=pk)
        body = s.BatchRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            job = deploy.start_batch(product, request.user, folder=body.validated_data.get("folder") or None,
                                     zip_file=body.validated_data.get("zip"))
        except deploy.DeployRefused as error:
            return _deploy_refused(error)
        return Response(s.InspectionJobSerializer(job).data, status=status.HTTP_201_CREATED)


class InspectionJobView(generics.RetrieveAPIView):
    """An inspection job: status, progress and per-image results."""

    permission_classes = [IsReviewerRole]
    serializer_class = s.InspectionJobSerializer
    queryset = InspectionJob.objects.all()


class InspectionCancelView(APIView):
    """Cancel a queued batch inspection at once, or stop a running one after its current group of
    images (at once when its worker stopped responding); 409 for a job that has ended."""

    permission_classes = [IsReviewerRole]

    @extend_schema(request=None, responses={200: s.InspectionJobSerializer, 409: ALREADY_ENDED})
    def post(self, request, pk):
        try:
            job = deploy.cancel_job(get_object_or_404(InspectionJob, pk=pk))
        except NothingToCancel as error:
            return _already_ended(error)
        return Response(s.InspectionJobSerializer(job).data)


# ---- feedback and the audit trail (append-only: POST to add, GET to read; nothing edits) ---------------

def _feedback_refused(error: feedback.FeedbackRefused) -> Response:
    return Response({"detail": " ".join(error.messages), "problems": error.messages},
                    status=status.HTTP_400_BAD_REQUEST)


class VerdictFeedbackView(APIView):
    """Mark a verdict correct, false alarm or missed defect (optionally with a note and the defect's
    outline). Each mark is a new row; the newest counts for the rates. Reviewers and admins."""

    permission_classes = [IsReviewerRole]
    parser_classes = [JSONParser]

    @extend_schema(request=s.FeedbackRequestSerializer, responses={201: s.FeedbackSerializer})
    def post(self, request, pk):
        verdict = get_object_or_404(InspectionVerdict.objects.select_related("job"), pk=pk)
        body = s.FeedbackRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        try:
            row = feedback.mark(verdict, data["kind"], request.user, note=data.get("note", ""),
                                outline=data.get("outline") or None)
        except feedback.FeedbackRefused as error:
            return _feedback_refused(error)
        return Response(s.FeedbackSerializer(row).data, status=status.HTTP_201_CREATED)


class VerdictAddView(APIView):
    """Add a marked verdict's image to its product's dataset (a test image: defect-free after a
    false alarm, anomalous after a missed or confirmed defect, with the outline as mask when drawn)."""

    permission_classes = [IsReviewerRole]

    @extend_schema(request=None, responses={201: s.DatasetAdditionSerializer})
    def post(self, request, pk):
        verdict = get_object_or_404(InspectionVerdict.objects.select_related("job"), pk=pk)
        try:
            added = feedback.add_to_dataset(verdict, request.user)
        except feedback.FeedbackRefused as error:
            return _feedback_refused(error)
        return Response(s.DatasetAdditionSerializer(added).data, status=status.HTTP_201_CREATED)


class VerdictPagination(CursorPagination):
    """Keyset pages (newest first): a page costs the same however many verdicts there are."""

    ordering = ("-inspected_at", "-id")
    page_size = 100


class ProductVerdictsView(generics.ListAPIView):
    """The product's verdicts, newest first, each with its newest mark. Reviewers and admins."""

    permission_classes = [IsReviewerRole]
    serializer_class = s.VerdictSerializer
    pagination_class = VerdictPagination

    def get_queryset(self):
        product = get_object_or_404(Product, pk=self.kwargs["pk"])
        return InspectionVerdict.objects.filter(product=product).select_related("deployment__product_run")

    def get_serializer_context(self):
        return {**super().get_serializer_context(), "latest": getattr(self, "_latest", {})}

    def list(self, request, *args, **kwargs):
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        self._latest = feedback.latest_feedback([v.pk for v in page])
        return self.get_paginated_response(self.get_serializer(page, many=True).data)
