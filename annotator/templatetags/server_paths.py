"""``{{ run.error|without_server_paths }}``: an error text (an exception's, stored with a run or job)
with every absolute server path named by its place in the data roots (annotator.paths)."""
from django import template

from annotator.paths import without_server_paths as _without_server_paths

register = template.Library()


@register.filter
def without_server_paths(text):
    return _without_server_paths(str(text or ""))
