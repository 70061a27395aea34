"""``{{ value|estimate }}``: a report number with its 95 % interval, as the results pages show it."""
from django import template
from django.utils.html import format_html

from inference.engine.report import estimate_parts

register = template.Library()


@register.filter
def estimate(value, digits=3):
    """An engine ``Estimate`` dict (value, low, high), or a plain number, or None (—)."""
    text, interval = estimate_parts(value, int(digits))
    if interval is None:
        return text
    return format_html('{} <span class="ci" title="95 % bootstrap interval over test images">{}</span>', text, interval)


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


@register.filter
def rate(value):
    """A small rate as people write it: 1e-05 -> "1e-5", 0.0025 -> "2.5e-3" (from 0.01 up: unchanged)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < 1e-2:
        return value
    mantissa, exponent = f"{value:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


@register.filter
def share(rate):
    """A ``feedback.Rate``: "2 / 5 = 40.0 % (95 % Wilson 11.8–76.9 %)", or "— (none reviewed)"."""
    if rate is None or rate.value is None:
        return "— (none reviewed)"
    return format_html('{} / {} = {} % <span class="ci" title="95 % Wilson score interval">({}–{} %)</span>',
                       rate.errors, rate.reviewed, f"{100 * rate.value:.1f}", f"{100 * rate.low:.1f}",
                       f"{100 * rate.high:.1f}")
