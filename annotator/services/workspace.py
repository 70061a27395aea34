"""What the labelling workspace shows for one image and one annotator."""
from django.core.cache import cache

from annotator.models import Image, Label
from annotator.services import queue, suggestions
from annotator.services.labels import visible_history

REFERENCE_LIMIT = 24
# How far back the workspace's Back key reaches (the newest labels of this product).
LABELLED_LIMIT = 50


# How long the workspace trusts that a product's nearest references were asked for.
REFERENCES_ASKED_SECONDS = 60


def workspace_data(image: Image, user, *, handout: queue.Handout | None = None) -> dict:
    """``handout``: the queue just handed ``image`` to ``user`` (who has no label of it yet) with
    the images it would hand out next."""
    from annotator.services.references import computed_nearest_reference, ensure_references, good_train_images

    product = image.product
    references = list(good_train_images(product.pk)[:REFERENCE_LIMIT])
    # The nearest defect-free image (feature space, computed in the background) is shown first;
    # until it is computed, the product's first defect-free image stands in.
    nearest = computed_nearest_reference(image)
    if nearest is None:
        if not cache.get(f"workspace:references-asked:{product.pk}"):
            ensure_references(product)
            cache.set(f"workspace:references-asked:{product.pk}", True, REFERENCES_ASKED_SECONDS)
    else:
        references = [nearest] + [r for r in references if r.pk != nearest.pk][:REFERENCE_LIMIT - 1]
    my_label = None if handout else (
        Label.objects.filter(image=image, annotator=user).select_related("annotator").order_by().first())
    labelled_ids = list(
        Label.objects.filter(annotator=user, image__product=product).order_by("-created_at")
        .values_list("image_id", flat=True)[:LABELLED_LIMIT]
    )[::-1]
    # Once the annotator has confirmed a background in this product, later images start with it
    # selected (changeable): a label is then a category and Enter.
    carried_background = (
        Label.objects.filter(annotator=user, image__product=product).order_by("-updated_at")
        .values_list("background", flat=True).first())
    upcoming = handout.upcoming if handout else queue.peek(user, product=product, exclude={image.pk})
    # A category suggestion for a new label only: my own label is what I gave, not a guess.
    suggestion, suggestion_note = None, ""
    if my_label is None and product.dataset.suggest_categories:
        # references[0] is the nearest reference (or its fallback): what the features compared against.
        suggestion = suggestions.suggestion_for(image, references[0] if references else None)
        if suggestion is None:
            suggestion_note = suggestions.requirement()
    return {
        "image": image,
        "product": product,
        "references": references,
        "my_label": my_label,
        "history": list(visible_history(user, image)[:50]),
        "progress_user": queue.user_progress(user, product).as_dict(),
        "progress_product": queue.product_progress(product).as_dict(),
        "carried_background": carried_background,
        "labelled_ids": labelled_ids,
        "upcoming": upcoming,
        "suggestion": suggestion,
        "suggestion_note": suggestion_note,
    }
