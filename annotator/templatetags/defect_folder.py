"""``{{ image|shown_path:user }}`` and ``{{ image|shown_defect_type:user }}``: an image's path and
defect type as the viewer may see them (annotator.services.defect_folder)."""
from django import template

from annotator.services import defect_folder

register = template.Library()


@register.filter
def shown_path(image, user):
    """The path a person reads (starting with the product), or the neutral name when hidden."""
    return defect_folder.shown_display_path(image, user)


@register.filter
def shown_defect_type(image, user):
    return defect_folder.shown_defect_type(image, user) or defect_folder.ANOMALOUS
