"""What the labelling workspace shows for one image and one annotator."""
from annotator.models import Image, Label
from annotator.services import queue
from annotator.services.labels import visible_history

REFERENCE_LIMIT = 24
# How far back the workspace's Back key reaches (the newest labels of this product).
LABELLED_LIMIT = 50


def workspace_data(image: Image, user) -> dict:
    product = image.product
    references = Image.objects.filter(product=product, split=Image.Split.TRAIN, is_anomalous=False)[:REFERENCE_LIMIT]
    my_label = Label.objects.filter(image=image, annotator=user).select_related("annotator").first()
    labelled_ids = list(
        Label.objects.filter(annotator=user, image__product=product).order_by("-created_at")
        .values_list("image_id", flat=True)[:LABELLED_LIMIT]
    )[::-1]
    return {
        "image": image,
        "product": product,
        "references": list(references),
        "my_label": my_label,
        "history": list(visible_history(user, image)[:50]),
        "progress_user": queue.user_progress(user, product).as_dict(),
        "progress_product": queue.product_progress(product).as_dict(),
        "labelled_ids": labelled_ids,
        "upcoming": queue.peek(user, product=product, exclude={image.pk}),
    }
