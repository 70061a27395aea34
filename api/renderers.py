"""DRF's browsable API, as the Content-Security-Policy allows it."""
from rest_framework import renderers


class BrowsableAPIRenderer(renderers.BrowsableAPIRenderer):
    """The browsable API without Pygments' CSS: DRF writes it into an inline <style>, which the CSP
    (style-src 'self') refuses. Nothing on these pages is highlighted anyway: that needs the
    markdown package, which the app does not install."""

    def get_context(self, data, accepted_media_type, renderer_context):
        context = super().get_context(data, accepted_media_type, renderer_context)
        context["code_style"] = None
        return context
