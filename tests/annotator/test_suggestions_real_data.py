"""Category suggestions on the real MVTec AD bottle with its 63 reference labels, through the app's
own path: import, label CSV, nearest references, the beat task's features and fit. The suggestion
never sees the defect folder's name. Issue 22 item 6 asks for a leave-one-out top-1 accuracy of at
least 0.85 (always "structural" scores 0.65)."""
import pytest

from annotator import suggestion_features as sf
from annotator.models import Image, ImageFeatures
from annotator.services import label_csv, references, suggestions
from annotator.services.importing import import_dataset

pytestmark = [pytest.mark.real_data, pytest.mark.django_db]


def test_leave_one_out_accuracy_on_the_bottle_reference_labels(settings, real_bottle_root, real_labels_csv,
                                                                admin_account):
    settings.DEFECTBENCH_DATA_ROOTS = [real_bottle_root.parent]
    dataset = import_dataset(real_bottle_root).dataset
    report = label_csv.import_labels(real_labels_csv.read_bytes(), dataset=dataset, importer=admin_account)
    assert report.ok and report.created == 63, report.errors
    dataset.suggest_categories = True
    dataset.save()
    product = dataset.products.get()
    assert references.compute_references(product.pk) == "done"

    assert suggestions.refresh(limit=100) == 63  # the labelled anomalous test images
    assert ImageFeatures.objects.filter(vector__isnull=False).count() == 63
    vectors, categories = suggestions.training_set(dataset)
    assert len(vectors) == 63

    predictions = sf.leave_one_out(vectors, categories)
    accuracy = sum(p == c for p, c in zip(predictions, categories)) / len(categories)
    assert accuracy >= 0.85, (accuracy, list(zip(categories, predictions)))

    # The fitted suggester answers the workspace for an image, against the reference shown first.
    image = Image.objects.filter(product=product, defect_type="contamination").order_by("path").first()
    suggestion = suggestions.suggestion_for(image, references.nearest_reference(image))
    assert suggestion is not None and suggestion.category in {"structural", "contamination", "combined"}
    assert suggestion.n_labels == 63
