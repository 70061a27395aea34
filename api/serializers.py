"""Serializers of the labelling API."""
from django.urls import reverse
from rest_framework import serializers
from rest_framework.authtoken.serializers import AuthTokenSerializer

from annotator.forms import MAX_ID, MIN_ID
from annotator.models import Dataset, DefectBookEntry, Image, Label, LabelHistory, Product, ReviewDecision, User
from annotator.services import defect_book, defect_folder, label_csv
from annotator.services.display import DISPLAY_SIZES


# An id beyond the database's keys (10**30, or 1e999, which JSON reads as infinity), a fraction
# (1.5) or true is a 400 naming the field, never an overflow in the driver nor silently image 1.
def id_field(**kwargs) -> serializers.IntegerField:
    return serializers.IntegerField(min_value=MIN_ID, max_value=MAX_ID, **kwargs)


class IdRelatedField(serializers.PrimaryKeyRelatedField):
    """A primary key checked as an id (``id_field``) before it is looked up."""

    def __init__(self, **kwargs):
        kwargs.setdefault("pk_field", id_field())
        super().__init__(**kwargs)


class DatasetSerializer(serializers.ModelSerializer):
    class Meta:
        model = Dataset
        fields = ["id", "name", "layout", "label_overlap", "created_at"]


class ProductSerializer(serializers.ModelSerializer):
    dataset_name = serializers.CharField(source="dataset.name", read_only=True)
    suggested_background = serializers.BooleanField(read_only=True)

    class Meta:
        model = Product
        fields = ["id", "dataset", "dataset_name", "name", "kind", "suggested_background"]


def viewer(serializer):
    """The user a serializer's data is for (None without a request: treated as an annotator)."""
    request = serializer.context.get("request")
    return getattr(request, "user", None)


class HidesDefectFolders:
    """Serializers that show images: whether the viewer may see an image's defect folder, asked
    once per product (annotator.services.defect_folder)."""

    def hides(self, image) -> bool:
        cache = self.context.setdefault("defect_folder_hidden", {})
        if image.product_id not in cache:
            cache[image.product_id] = defect_folder.hidden_for(viewer(self), image.product.dataset)
        return cache[image.product_id]


class ImageSerializer(HidesDefectFolders, serializers.ModelSerializer):
    image_url = serializers.SerializerMethodField()
    mask_url = serializers.SerializerMethodField()
    defect_type = serializers.SerializerMethodField(
        help_text="the dataset's defect folder; null for an annotator when the dataset hides its folders")
    path = serializers.SerializerMethodField(
        help_text="relative to the dataset's folder; for an annotator of a dataset that hides its defect "
                  "folders, the product and image id instead (the folders name the defect)")

    class Meta:
        model = Image
        fields = [
            "id", "product", "split", "is_anomalous", "defect_type", "path", "width", "height",
            "image_url", "mask_url",
        ]

    def get_defect_type(self, image) -> str | None:
        return None if image.is_anomalous and self.hides(image) else image.defect_type

    def get_path(self, image) -> str:
        return defect_folder.neutral_name(image) if self.hides(image) else image.path

    def get_image_url(self, image) -> str:
        return reverse("image-file", args=[image.pk, "image"])

    def get_mask_url(self, image) -> str | None:
        return reverse("image-file", args=[image.pk, "mask"]) if image.mask_path else None


class LabelSerializer(serializers.ModelSerializer):
    annotator = serializers.CharField(source="annotator.username", read_only=True)
    # With its product and dataset: submitting reads the dataset's overlap.
    image = IdRelatedField(queryset=Image.objects.select_related("product__dataset"))

    class Meta:
        model = Label
        fields = ["id", "image", "annotator", "background", "background_carried", "category",
                  "suggested_category", "suggestion_taken", "created_at", "updated_at"]
        extra_kwargs = {"background_carried": {"help_text": (
            "the workspace pre-selected this background from the annotator's previous label of the product "
            "and the annotator submitted it unchanged")},
            "suggested_category": {"help_text": (
                "the category the workspace suggested when this label was created (\"\" for none); "
                "recorded only on creation and only where the dataset offers suggestions")},
            "suggestion_taken": {"help_text": "the label was first submitted with the suggested category"}}
        read_only_fields = ["id", "annotator", "suggestion_taken", "created_at", "updated_at"]
        # Re-labelling one's own image is an update, not a uniqueness error: the view upserts.
        validators = []


class LabelHistorySerializer(HidesDefectFolders, serializers.ModelSerializer):
    annotator = serializers.CharField(source="annotator.username", read_only=True)
    changed_by = serializers.CharField(source="changed_by.username", read_only=True)
    image_path = serializers.SerializerMethodField(help_text="the image's path as ImageSerializer shows it")

    class Meta:
        model = LabelHistory
        fields = ["id", "image", "image_path", "annotator", "changed_by", "action", "before", "after",
                  "source", "changed_at"]

    def get_image_path(self, entry) -> str:
        return defect_folder.neutral_name(entry.image) if self.hides(entry.image) else entry.image.path


class ProgressSerializer(serializers.Serializer):
    done = serializers.IntegerField()
    total = serializers.IntegerField()
    percent = serializers.IntegerField()


class SuggestionSerializer(serializers.Serializer):
    category = serializers.ChoiceField(choices=Label.Category.choices)
    probability = serializers.FloatField(help_text="the classifier's probability of this category, 0..1")
    n_labels = serializers.IntegerField(help_text="labels of the dataset it learned from")


class WorkspaceSerializer(serializers.Serializer):
    """Everything the labelling workspace needs for one image."""

    image = ImageSerializer()
    product = ProductSerializer()
    references = ImageSerializer(many=True)
    my_label = LabelSerializer(allow_null=True)
    history = LabelHistorySerializer(many=True)
    progress_user = ProgressSerializer()
    progress_product = ProgressSerializer()
    carried_background = serializers.BooleanField(
        allow_null=True, help_text="the background of the user's latest label of this product (the workspace "
                                   "starts a new image with it selected); null before their first")
    labelled_ids = serializers.ListField(child=serializers.IntegerField(),
                                         help_text="Images of this product the user labelled, oldest first (the latest 50).")
    suggestion = SuggestionSerializer(allow_null=True, help_text=(
        "the category suggested for this image (pre-selected by the workspace); null when the dataset offers "
        "none, has too few labels yet, or the user has labelled the image"))
    suggestion_note = serializers.CharField(
        allow_blank=True, help_text="why no suggestion is shown where the dataset offers them; \"\" otherwise")
    upcoming = serializers.ListField(child=serializers.IntegerField(),
                                     help_text="Images the user will probably get next (to prefetch; not claimed).")


class NextImageRequestSerializer(serializers.Serializer):
    dataset = IdRelatedField(queryset=Dataset.objects.all(), required=False, allow_null=True)
    product = IdRelatedField(queryset=Product.objects.all(), required=False, allow_null=True)

    def validate(self, attrs):
        dataset, product = attrs.get("dataset"), attrs.get("product")
        if dataset is not None and product is not None and product.dataset_id != dataset.pk:
            raise serializers.ValidationError({"product": f"Product {product.pk} is not a product of dataset {dataset.pk}."})
        return attrs


class SkipRequestSerializer(serializers.Serializer):
    image = IdRelatedField(queryset=Image.objects.all())


class ReviewDecisionSerializer(serializers.ModelSerializer):
    reviewer = serializers.CharField(source="reviewer.username", read_only=True)

    class Meta:
        model = ReviewDecision
        fields = ["image", "reviewer", "background", "category", "note", "decided_at"]
        read_only_fields = ["image", "reviewer", "decided_at"]


class ReviewItemSerializer(serializers.Serializer):
    image = ImageSerializer()
    labels = LabelSerializer(many=True)
    decision = ReviewDecisionSerializer(allow_null=True)


# The display size of the defect book's thumbnails (one of DISPLAY_SIZES: a cached copy).
BOOK_THUMBNAIL_SIZE = 256


class DefectBookEntrySerializer(HidesDefectFolders, serializers.ModelSerializer):
    """An entry of a defect book: the reviewer's choice (category, kind, note), never a label."""

    pinned_by = serializers.CharField(source="pinned_by.username", read_only=True)
    kind_label = serializers.CharField(source="get_kind_display", read_only=True)
    image_path = serializers.SerializerMethodField(help_text="the image's path as ImageSerializer shows it")
    thumbnail_url = serializers.SerializerMethodField(help_text=f"a {BOOK_THUMBNAIL_SIZE} px display copy")
    mask_url = serializers.SerializerMethodField(help_text="its mask at the thumbnail's size; null without one")
    url = serializers.SerializerMethodField(help_text="the entry in the API (DELETE unpins it)")

    class Meta:
        model = DefectBookEntry
        fields = ["id", "url", "dataset", "image", "image_path", "category", "kind", "kind_label", "note", "pinned_by",
                  "pinned_at", "thumbnail_url", "mask_url"]
        read_only_fields = fields

    def get_image_path(self, entry) -> str:
        return defect_folder.neutral_name(entry.image) if self.hides(entry.image) else entry.image.path

    def get_url(self, entry) -> str:
        return reverse("api-defect-book-entry", args=[entry.pk])

    def get_thumbnail_url(self, entry) -> str:
        return f"{reverse('image-file', args=[entry.image_id, 'image'])}?size={BOOK_THUMBNAIL_SIZE}"

    def get_mask_url(self, entry) -> str | None:
        if not entry.image.mask_path:
            return None
        return f"{reverse('image-file', args=[entry.image_id, 'mask'])}?size={BOOK_THUMBNAIL_SIZE}"


class DefectBookPinSerializer(serializers.Serializer):
    dataset = IdRelatedField(queryset=Dataset.objects.all())
    image = IdRelatedField(queryset=Image.objects.select_related("product__dataset"))
    category = serializers.ChoiceField(choices=Label.Category.values)
    kind = serializers.ChoiceField(choices=DefectBookEntry.Kind.values)
    note = serializers.CharField(required=False, allow_blank=True, default="",
                                 max_length=defect_book.NOTE_MAX_LENGTH)


class DefectBookPanelSerializer(serializers.Serializer):
    """What the labelling workspace shows of one category of a dataset's book."""

    dataset = serializers.IntegerField()
    category = serializers.CharField()
    total = serializers.IntegerField(help_text="entries of this category, without the excluded image")
    book_url = serializers.CharField(help_text="the dataset's defect book page")
    entries = DefectBookEntrySerializer(many=True, help_text=f"at most {defect_book.PANEL_LIMIT}, examples first")
    this_image = DefectBookEntrySerializer(
        allow_null=True, help_text="reviewers and admins only: the excluded image's own entry under this "
                                   "category (null for annotators, who never learn what was decided about it)")


class LabelImportRequestSerializer(serializers.Serializer):
    file = serializers.FileField()
    dataset = serializers.SlugRelatedField(slug_field="name", queryset=Dataset.objects.all())
    annotator = serializers.CharField(required=False, help_text="username the labels are attributed to")
    dry_run = serializers.BooleanField(default=False)


class ImportErrorSerializer(serializers.Serializer):
    line = serializers.IntegerField()
    image_path = serializers.CharField()
    message = serializers.CharField()


class LabelImportReportSerializer(serializers.Serializer):
    dataset = serializers.CharField()
    annotator = serializers.CharField()
    dry_run = serializers.BooleanField()
    rows = serializers.IntegerField()
    ok = serializers.BooleanField()
    applied = serializers.BooleanField()
    created = serializers.IntegerField()
    updated = serializers.IntegerField()
    unchanged = serializers.IntegerField()
    categories = serializers.DictField(child=serializers.IntegerField())
    background = serializers.DictField(child=serializers.IntegerField())
    error_count = serializers.IntegerField(help_text="all errors found; at most 100 are listed")
    errors = ImportErrorSerializer(many=True)
    skipped_count = serializers.IntegerField(help_text="rows of a per-image export left out as unresolved")
    skipped = ImportErrorSerializer(many=True, help_text="those rows (at most 100), with their lines")


class TokenRequestSerializer(AuthTokenSerializer):
    """DRF's username-and-password check; the username no longer than the user model allows (a
    failed login is recorded with it)."""
    username = serializers.CharField(write_only=True, max_length=User._meta.get_field("username").max_length)
    token = None


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField()


# ---- query parameters -----------------------------------------------------------------------------
# Each list or filter endpoint validates its query string with one of these: a bad value (not a whole
# number, a null character, an unknown choice) gets a 400 naming the parameter, never a server error.

class CommaListField(serializers.ListField):
    """A list in a query string, repeated (``?a=1&a=2``) and/or comma-separated (``?a=1,2``)."""

    def get_value(self, dictionary):
        if self.field_name not in dictionary:
            return serializers.empty
        return [part for value in dictionary.getlist(self.field_name) for part in value.split(",") if part]


class DatasetQuerySerializer(serializers.Serializer):
    dataset = id_field(required=False)


class ImageQuerySerializer(serializers.Serializer):
    product = id_field(required=False)
    dataset = id_field(required=False)
    split = serializers.ChoiceField(choices=Image.Split.values, required=False)
    is_anomalous = serializers.BooleanField(required=False, allow_null=True, default=None)
    defect_type = serializers.CharField(required=False)


class FileQuerySerializer(serializers.Serializer):
    size = serializers.ChoiceField(choices=DISPLAY_SIZES, required=False,
                                   error_messages={"invalid_choice": f"One of {list(DISPLAY_SIZES)}."})


class LabelQuerySerializer(serializers.Serializer):
    image = id_field(required=False)
    dataset = id_field(required=False)
    annotator = serializers.CharField(required=False)


class HistoryQuerySerializer(serializers.Serializer):
    image = id_field(required=False)


class ReviewQuerySerializer(serializers.Serializer):
    dataset = id_field(required=False)
    include_decided = serializers.BooleanField(required=False, default=False)


class AgreementQuerySerializer(serializers.Serializer):
    dataset = id_field()


class ExportQuerySerializer(serializers.Serializer):
    dataset = id_field()
    variant = serializers.ChoiceField(choices=label_csv.EXPORT_VARIANTS, required=False, default="images",
                                      error_messages={"invalid_choice": f"One of {list(label_csv.EXPORT_VARIANTS)}."})


class DefectBookQuerySerializer(serializers.Serializer):
    dataset = id_field()
    category = serializers.ChoiceField(choices=Label.Category.values,
                                       error_messages={"invalid_choice": f"One of {Label.Category.values}."})
    exclude_image = id_field(required=False, help_text="the image being labelled: left out of the entries")
