"""``{{ value|estimate }}``: a report number with its 95 % interval, as the results pages show it."""
from numbers import Number

from django import template
from django.utils.html import format_html

register = template.Library()


def _fmt(value, digits: int) -> str:
    return f"{value:.{digits}f}"


@register.filter
def estimate(value, digits=3):
    """An engine ``Estimate`` dict (value, low, high), or a plain number, or None (—)."""
    digits = int(digits)
    if isinstance(value, dict):
        point, low, high = value.get("value"), value.get("low"), value.get("high")
    else:
        point, low, high = value, None, None
    if not isinstance(point, Number):
        return "—"
    if isinstance(low, Number) and isinstance(high, Number):
        return format_html('{} <span class="ci" title="95 % bootstrap interval over test images">[{}, {}]</span>',
                           _fmt(point, digits), _fmt(low, digits), _fmt(high, digits))
    return _fmt(point, digits)


@register.filter
def get_item(mapping, key):
    """``mapping[key]`` in a template (dict keys that are not identifiers, e.g. integers)."""
    try:
        return mapping.get(key)
    except AttributeError:
        return None


@register.filter
def metric_label(key):
    """The one name of a metric on every page (``reports.METRIC_LABELS``)."""
    from inference.services.reports import METRIC_LABELS

    return METRIC_LABELS.get(key, key)
