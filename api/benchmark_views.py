"""Benchmark API views (thin: the rules live in inference.services)."""
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from annotator.models import Dataset, Product
from api import benchmark_serializers as s
from api.permissions import IsAdminRole, ReadAnyWriteAdmin
from inference.models import BenchmarkRun
from inference.services import recommendation, runs


def _refused(error: runs.LaunchRefused) -> Response:
    return Response({"detail": " ".join(error.messages), "problems": error.messages},
                    status=status.HTTP_400_BAD_REQUEST)


def _runs_queryset():
    return BenchmarkRun.objects.select_related("dataset", "created_by").prefetch_related("product_runs__product")


class RunListView(generics.ListCreateAPIView):
    """GET: benchmark runs, newest first (``?status=running``). POST (admins): launch a run."""

    permission_classes = [ReadAnyWriteAdmin]
    serializer_class = s.BenchmarkRunSerializer

    def get_queryset(self):
        queryset = _runs_queryset()
        wanted = self.request.query_params.get("status")
        if wanted:
            queryset = queryset.filter(status__in=wanted.split(","))
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
    """Cancel a queued run at once, or ask a running one to stop at its next batch."""

    permission_classes = [IsAdminRole]

    @extend_schema(request=None, responses=s.BenchmarkRunSerializer)
    def post(self, request, pk):
        run = get_object_or_404(BenchmarkRun, pk=pk)
        run = runs.cancel_run(run, request.user)
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


def _list_param(request, name):
    values = []
    for value in request.query_params.getlist(name):
        values += [v for v in value.split(",") if v]
    return values


class SubsetCountsView(APIView):
    """How many images a launch with this subset would use, and why it would be refused."""

    permission_classes = [IsAdminRole]

    @extend_schema(parameters=[
        OpenApiParameter("dataset", OpenApiTypes.INT),
        OpenApiParameter("products", OpenApiTypes.STR, description="ids, comma-separated or repeated"),
        OpenApiParameter("categories", OpenApiTypes.STR),
        OpenApiParameter("background", OpenApiTypes.STR, description="yes, no or any"),
        OpenApiParameter("techniques", OpenApiTypes.STR),
    ], responses=OpenApiTypes.OBJECT)
    def get(self, request):
        try:
            product_ids = [int(v) for v in _list_param(request, "products")]
        except ValueError:
            raise ValidationError({"products": "Expected product ids."})
        products = Product.objects.filter(pk__in=product_ids).order_by("name")
        dataset = request.query_params.get("dataset")
        if dataset:
            products = products.filter(dataset_id=dataset)
        try:
            counts = runs.subset_counts(
                list(products), categories=_list_param(request, "categories"),
                background=runs.parse_background(request.query_params.get("background")),
                techniques=_list_param(request, "techniques"),
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
