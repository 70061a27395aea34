"""Where a page may send the browser next when the address comes from the request (``?from=``)."""
from django.utils.http import url_has_allowed_host_and_scheme


def local_url(request, candidate: str | None, default: str = "") -> str:
    """``candidate`` when it stays on this site, else ``default``.

    Django's own check (the one its login ``next=`` uses), not a prefix test: ``//evil.example``,
    ``/\\evil.example``, ``///evil.example`` (``/%2F%2F...`` decoded) and ``https://evil.example``
    all start with ``/`` or name another host, and a browser leaves the site for each of them.
    """
    if candidate and url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    return default
