"""``{{ product|place }}`` and ``{{ dataset|place:products }}``: where a page is, named once
(``annotator.models.place_name``: "bottle", not "bottle / bottle")."""
from django import template

from annotator.models import Dataset, Product, place_name

register = template.Library()


@register.filter
def place(subject, products=None):
    """A product's place, or a dataset's with the given products (or product runs: their products)."""
    if isinstance(subject, Product):
        return subject.place_name
    if isinstance(subject, Dataset):
        names = [getattr(item, "product", item).name for item in (products or [])]
        return place_name(subject.name, names)
    raise TypeError(f"place: a product or a dataset, not {type(subject).__name__}")
