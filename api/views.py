"""Labelling API views (thin: the rules live in annotator.services)."""
import json

from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_not_required
from django.utils.decorators import method_decorator
from rest_framework.authtoken.views import ObtainAuthToken
from django.http import StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from annotator import lockout
from annotator.downloads import attachment
from annotator.models import Dataset, DefectBookEntry, Image, Label, LabelHistory, Product
from annotator.services import agreement, defect_book, defect_folder, label_csv, queue, review, statistics
from annotator.services.display import DISPLAY_SIZES
from annotator.services.labels import delete_label, visible_history
from annotator.services.workspace import workspace_data
from api import serializers as s
from api import tokens
from api.authentication import LoginLockedOut
from api.permissions import IsAdminRole, IsLabelOwnerOrReviewer, IsReviewerRole, ReadAnyWriteReviewer



def query(request, serializer_class) -> dict:
    """The request's query parameters as ``serializer_class`` validates them (a 400 naming them if not)."""
    serializer = serializer_class(data=request.query_params)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class DatasetViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = Dataset.objects.all()
    serializer_class = s.DatasetSerializer


@extend_schema(parameters=[OpenApiParameter("dataset", int, description="only this dataset's products")])
class ProductViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = s.ProductSerializer

    def get_queryset(self):
        products = Product.objects.select_related("dataset")
        dataset = query(self.request, s.DatasetQuerySerializer).get("dataset")
        return products.filter(dataset_id=dataset) if dataset else products


@extend_schema(parameters=[
    OpenApiParameter("product", int), OpenApiParameter("dataset", int),
    OpenApiParameter("split", str, enum=Image.Split.values), OpenApiParameter("is_anomalous", bool),
    OpenApiParameter("defect_type", str),
])
class ImageViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = s.ImageSerializer

    def get_queryset(self):
        images = Image.objects.select_related("product__dataset")
        params = query(self.request, s.ImageQuerySerializer)
        if product := params.get("product"):
            images = images.filter(product_id=product)
        if dataset := params.get("dataset"):
            images = images.filter(product__dataset_id=dataset)
        if params.get("split"):
            images = images.filter(split=params["split"])
        if params["is_anomalous"] is not None:
            images = images.filter(is_anomalous=params["is_anomalous"])
        if params.get("defect_type"):
            images = defect_folder.filter_by_defect_type(images, params["defect_type"], self.request.user)
        return images

    def _file(self, request, kind):
        image = self.get_object()
        url = reverse("image-file", args=[image.pk, kind])
        if size := query(request, s.FileQuerySerializer).get("size"):
            url += f"?size={size}"
        return redirect(url)

    @extend_schema(
        parameters=[OpenApiParameter("size", int, enum=list(DISPLAY_SIZES))],
        responses={302: OpenApiResponse(description="Redirect to the login-checked file view")},
    )
    @action(detail=True, methods=["get"])
    def image(self, request, pk=None):
        """The image file (redirects to the login-checked file view)."""
        return self._file(request, "image")

    @extend_schema(
        parameters=[OpenApiParameter("size", int, enum=list(DISPLAY_SIZES))],
        responses={302: OpenApiResponse(description="Redirect to the login-checked file view")},
    )
    @action(detail=True, methods=["get"])
    def mask(self, request, pk=None):
        """The ground-truth mask (redirects to the login-checked file view)."""
        return self._file(request, "mask")

    @extend_schema(responses=s.WorkspaceSerializer)
    @action(detail=True, methods=["get"])
    def workspace(self, request, pk=None):
        """Everything the labelling workspace shows for this image."""
        image = self.get_object()
        return Response(s.WorkspaceSerializer(workspace_data(image, request.user), context={"request": request}).data)


@extend_schema(parameters=[OpenApiParameter("image", int), OpenApiParameter("dataset", int),
                           OpenApiParameter("annotator", str, description="username (reviewers only)")])
class LabelViewSet(viewsets.ModelViewSet):
    """Labels. Annotators see and change only their own; reviewers and admins see all.

    POST creates the caller's label of an image or changes it if it exists (so re-submitting is
    safe); it is refused (409) when the image already has all the labels its overlap asks for.
    """

    serializer_class = s.LabelSerializer
    permission_classes = [IsAuthenticated, IsLabelOwnerOrReviewer]
    http_method_names = ["get", "post", "put", "patch", "delete", "head", "options"]

    queryset = Label.objects.none()

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Label.objects.none()
        labels = Label.objects.select_related("annotator", "image")
        user = self.request.user
        params = query(self.request, s.LabelQuerySerializer)
        if not user.is_reviewer_role:
            labels = labels.filter(annotator=user)
        elif params.get("annotator"):
            labels = labels.filter(annotator__username=params["annotator"])
        if image := params.get("image"):
            labels = labels.filter(image_id=image)
        if dataset := params.get("dataset"):
            labels = labels.filter(image__product__dataset_id=dataset)
        return labels

    def _submit(self, image, data, status_code):
        try:
            label = queue.submit_label(
                user=self.request.user, image=image,
                background=data["background"], category=data["category"],
                background_carried=data.get("background_carried", False),
                suggested_category=data.get("suggested_category", ""),
                # The workspace says so; anything else is recorded as "api" (never "review" etc.).
                source="workspace" if self.request.headers.get("X-Label-Source") == "workspace" else "api",
            )
        except queue.QueueError as error:
            return Response({"detail": str(error)}, status=status.HTTP_409_CONFLICT)
        return Response(s.LabelSerializer(label).data, status=status_code)

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return self._submit(serializer.validated_data["image"], serializer.validated_data, status.HTTP_201_CREATED)

    def update(self, request, *args, **kwargs):
        label = self.get_object()
        if label.annotator_id != request.user.pk:
            raise PermissionDenied("Only the annotator may change a label.")
        data = {"background": label.background, "category": label.category}
        serializer = self.get_serializer(label, data=request.data, partial=kwargs.get("partial", False))
        serializer.is_valid(raise_exception=True)
        data.update({k: v for k, v in serializer.validated_data.items() if k in data})
        return self._submit(label.image, data, status.HTTP_200_OK)

    def perform_destroy(self, label):
        if label.annotator_id != self.request.user.pk:
            raise PermissionDenied("Only the annotator may delete a label.")
        delete_label(label=label, changed_by=self.request.user, source="api")


class NextImageView(APIView):
    @extend_schema(request=s.NextImageRequestSerializer,
                   responses={200: s.WorkspaceSerializer, 204: OpenApiResponse(description="Nothing left to label")})
    def post(self, request):
        """Claim the next image the caller should label (optionally within a dataset or product)."""
        serializer = s.NextImageRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        handout = queue.hand_out(request.user, dataset=serializer.validated_data.get("dataset"),
                                 product=serializer.validated_data.get("product"))
        if handout.image is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        data = workspace_data(handout.image, request.user, handout=handout)
        return Response(s.WorkspaceSerializer(data, context={"request": request}).data)


class SkipView(APIView):
    @extend_schema(request=s.SkipRequestSerializer, responses={204: None})
    def post(self, request):
        """Skip an image: it is released, and offered to the caller again only when nothing else is left."""
        serializer = s.SkipRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            queue.skip_image(request.user, serializer.validated_data["image"])
        except queue.QueueError as error:
            raise ValidationError({"image": str(error)})
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema(parameters=[OpenApiParameter("dataset", int), OpenApiParameter("include_decided", bool)])
class ReviewListView(generics.ListAPIView):
    """Images whose annotators disagree, with every label and who gave it (paginated)."""

    permission_classes = [IsAuthenticated, IsReviewerRole]
    serializer_class = s.ReviewItemSerializer
    queryset = Image.objects.none()

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Image.objects.none()
        params = query(self.request, s.ReviewQuerySerializer)
        return review.disagreements(
            dataset=get_object_or_404(Dataset, pk=params["dataset"]) if params.get("dataset") else None,
            include_decided=params["include_decided"],
        )

    def list(self, request, *args, **kwargs):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(self.get_serializer(review.items_for(page), many=True).data)


class ReviewDecisionView(APIView):
    permission_classes = [IsAuthenticated, IsReviewerRole]

    @extend_schema(request=s.ReviewDecisionSerializer, responses=s.ReviewDecisionSerializer)
    def post(self, request, image_id: int):
        """Set the final label of an image (recorded in the label history, source "review")."""
        image = get_object_or_404(Image, pk=image_id)
        serializer = s.ReviewDecisionSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            decision = review.decide(image=image, reviewer=request.user, **serializer.validated_data)
        except review.NotReviewable as error:
            raise ValidationError({"image": str(error)})
        return Response(s.ReviewDecisionSerializer(decision).data)


class DefectBookView(APIView):
    """A dataset's defect book: reviewers pin labelled images to a category; everyone reads."""

    permission_classes = [IsAuthenticated, ReadAnyWriteReviewer]

    @extend_schema(parameters=[s.DefectBookQuerySerializer],
                   responses=s.DefectBookPanelSerializer)
    def get(self, request):
        """One category's entries as the labelling workspace shows them (at most
        ``PANEL_LIMIT``, examples first), without the image ``exclude_image``."""
        params = query(request, s.DefectBookQuerySerializer)
        dataset = get_object_or_404(Dataset, pk=params["dataset"])
        excluded = params.get("exclude_image")
        shown = defect_book.panel(dataset, params["category"], exclude_image_id=excluded)
        this_image = None
        if excluded is not None and request.user.is_reviewer_role:
            this_image = defect_book.pin_of(dataset, params["category"], excluded)
        data = {"dataset": dataset.pk, "category": params["category"], "total": shown.total,
                "book_url": reverse("defect-book", args=[dataset.pk]),
                "entries": shown.entries, "this_image": this_image}
        return Response(s.DefectBookPanelSerializer(data, context={"request": request}).data)

    @extend_schema(request=s.DefectBookPinSerializer,
                   responses={200: s.DefectBookEntrySerializer, 201: s.DefectBookEntrySerializer})
    def post(self, request):
        """Pin an image of the dataset to a category (201); pinned again, its kind and note are replaced (200)."""
        serializer = s.DefectBookPinSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            entry, created = defect_book.pin(reviewer=request.user, **data)
        except defect_book.BookRefused as error:
            raise ValidationError({"image": [str(error)]})
        return Response(s.DefectBookEntrySerializer(entry, context={"request": request}).data,
                        status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class DefectBookEntryView(APIView):
    permission_classes = [IsAuthenticated, ReadAnyWriteReviewer]

    @extend_schema(responses={204: None})
    def delete(self, request, pk: int):
        """Take an entry out of its defect book."""
        entry = get_object_or_404(DefectBookEntry.objects.select_related("dataset"), pk=pk)
        defect_book.unpin(dataset=entry.dataset, entry_id=entry.pk, reviewer=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class AgreementView(APIView):
    permission_classes = [IsAuthenticated, IsReviewerRole]

    @extend_schema(parameters=[OpenApiParameter("dataset", int, required=True)], responses=OpenApiTypes.OBJECT)
    def get(self, request):
        """Cohen's kappa per annotator pair with confusion matrices, Fleiss' kappa, Krippendorff's
        alpha (per field and overall), per-annotator counts and speed, as of ``computed_at`` (a
        snapshot renewed every few seconds while labels change)."""
        dataset = get_object_or_404(Dataset, pk=query(request, s.AgreementQuerySerializer)["dataset"])
        snapshot = statistics.current(dataset)
        return Response({**snapshot["agreement"], "computed_at": snapshot["computed_at"]})


class CSVRenderer(BaseRenderer):
    """Lets clients ask for ``Accept: text/csv`` (the export streams its own CSV)."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return data if isinstance(data, (bytes, str)) else json.dumps(data)


class ExportView(APIView):
    renderer_classes = [JSONRenderer, CSVRenderer]
    @extend_schema(
        parameters=[OpenApiParameter("dataset", int, required=True),
                    OpenApiParameter("variant", str, enum=list(label_csv.EXPORT_VARIANTS))],
        responses={(200, "text/csv"): OpenApiTypes.STR},
    )
    def get(self, request):
        """Labels as CSV (streamed). Annotators get only their own labels."""
        params = query(request, s.ExportQuerySerializer)
        dataset = get_object_or_404(Dataset, pk=params["dataset"])
        return csv_response(dataset, params["variant"], request.user)

    def finalize_response(self, request, response, *args, **kwargs):
        # Only the export itself is CSV: an error (no such dataset, a bad variant) is JSON like every
        # other API error, also for a client that asked for text/csv.
        if isinstance(response, Response) and response.status_code >= 400:
            request.accepted_renderer, request.accepted_media_type = JSONRenderer(), JSONRenderer.media_type
        return super().finalize_response(request, response, *args, **kwargs)


def csv_response(dataset, variant, user):
    response = StreamingHttpResponse(label_csv.export_lines(dataset, variant, user), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = attachment(label_csv.export_filename(dataset, variant))
    return response


class LabelImportView(APIView):
    permission_classes = [IsAuthenticated, IsAdminRole]
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(request={"multipart/form-data": s.LabelImportRequestSerializer},
                   responses={200: s.LabelImportReportSerializer,
                              400: OpenApiResponse(OpenApiTypes.OBJECT, description=(
                                  "The import report with ok=false and its errors (a bad file), or the "
                                  "request's field errors (no file, unknown dataset or annotator)"))})
    def post(self, request):
        """Import a label CSV (dry run with ``dry_run=true``); all rows or none."""
        serializer = s.LabelImportRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        annotator = None
        if data.get("annotator"):
            annotator = get_user_model().objects.filter(username=data["annotator"]).first()
            if annotator is None:
                raise ValidationError({"annotator": "No such user."})
        report = label_csv.import_labels(data["file"], dataset=data["dataset"], importer=request.user,
                                         annotator=annotator, dry_run=data["dry_run"])
        return Response(report.as_dict(), status=status.HTTP_200_OK if report.ok else status.HTTP_400_BAD_REQUEST)


@extend_schema(parameters=[OpenApiParameter("image", int)])
class HistoryViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """Label history, newest first: annotators see the history of their own labels, reviewers all."""

    serializer_class = s.LabelHistorySerializer

    queryset = LabelHistory.objects.none()

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return LabelHistory.objects.none()
        image = query(self.request, s.HistoryQuerySerializer).get("image")
        return visible_history(self.request.user, get_object_or_404(Image, pk=image) if image else None)


@method_decorator(login_not_required, name="dispatch")
class TokenView(ObtainAuthToken):
    """Exchange a username and password for the user's API token (``Authorization: Token <key>``);
    an expired one is replaced. Too many failed logins from one address: 429 (annotator.lockout)."""

    serializer_class = s.TokenRequestSerializer

    @extend_schema(request=s.TokenRequestSerializer, responses={200: s.TokenSerializer}, auth=[])
    def post(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        if not serializer.is_valid():
            if lockout.is_locked_out(request):
                raise LoginLockedOut(request)
            raise ValidationError(serializer.errors)
        return Response({"token": tokens.valid_or_new(serializer.validated_data["user"]).key})
