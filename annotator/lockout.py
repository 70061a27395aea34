"""Refusing a client that failed to log in too often: django-axes counts, these answer.

Settings (``config/settings.py``, "Logins") name ``LockoutBackend``, ``client_address`` and
``lockout_response`` for axes to use; ``lockout_message`` and ``is_locked_out`` serve the API's
token endpoint, which answers for itself (DRF wraps the request, so axes' middleware never sees
its lockout).
"""
from __future__ import annotations

import ipaddress
import math
from datetime import timedelta

from axes.backends import AxesStandaloneBackend
from axes.models import AccessAttempt
from django.conf import settings
from django.db.models import Max
from django.http import HttpResponse, JsonResponse
from django.shortcuts import render
from django.template.response import TemplateResponse
from django.utils import timezone


class LockoutBackend(AxesStandaloneBackend):
    """axes' refusal of locked-out clients, first of the authentication backends.

    Every login over HTTP comes with its request. ``authenticate()`` without one (a shell, a
    script, a test) has no client to count: it goes on to the password check as in plain Django
    instead of failing with axes' "requires a request".
    """

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)


def client_address(request) -> str | None:
    """The address failures are counted for.

    Behind the TLS proxy every request comes from the proxy: the client is the last
    X-Forwarded-For entry, the one the proxy itself added (entries before it come from the
    client and may be made up). An IPv6 client counts as its /64 network: one subscriber has
    all of it and could otherwise take a new address for every guess.
    """
    address = request.META.get("REMOTE_ADDR")
    if settings.DEFECTBENCH_CLIENT_ADDRESS_FROM_PROXY:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")[-1].strip()
        address = forwarded if _parsed(forwarded) else address
    ip = _parsed(address)
    if ip is None:
        return None
    if ip.version == 6:
        if ip.ipv4_mapped:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False).network_address)
    return str(ip)


def _parsed(address):
    try:
        return ipaddress.ip_address(address or "")
    except ValueError:
        return None


def retry_after_seconds(request) -> int:
    """Seconds until the client may try again: the lockout time after its latest counted failure
    (refused attempts are not counted, so the lockout does not move)."""
    lockout = settings.DEFECTBENCH_LOGIN_LOCKOUT_SECONDS
    latest = AccessAttempt.objects.filter(ip_address=client_address(request)).aggregate(
        latest=Max("attempt_time"))["latest"]
    if latest is None:
        return lockout
    left = (latest + timedelta(seconds=lockout) - timezone.now()).total_seconds()
    return max(1, min(lockout, math.ceil(left)))


def _duration(seconds: int) -> str:
    for unit, size in (("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'' if count == 1 else 's'}"
    return f"{seconds} second{'' if seconds == 1 else 's'}"


def lockout_message(seconds: int) -> str:
    return f"Too many failed login attempts from your address. Try again in {_duration(seconds)}."


def is_locked_out(request) -> bool:
    """Whether axes refused (or has just locked) the client of this login attempt."""
    return bool(getattr(request, "axes_locked_out", False))


def lockout_response(request, original_response=None, credentials=None) -> HttpResponse:
    """What a locked-out client gets (429, ``Retry-After``): the login page it posted to with the
    message in place of the form's errors, JSON ``{"detail"}`` under /api/, else plain text."""
    seconds = retry_after_seconds(request)
    message = lockout_message(seconds)
    context = getattr(original_response, "context_data", None) or {}
    if request.path.startswith("/api/"):
        response = JsonResponse({"detail": message}, status=429)
    elif isinstance(original_response, TemplateResponse) and context.get("form") is not None:
        form = context["form"]
        # Templates that list the form's errors (the admin's login) show the lockout instead of
        # "wrong password"; ours shows ``lockout``.
        form.errors.clear()
        form.add_error(None, message)
        response = render(request, original_response.template_name, {**context, "lockout": message}, status=429)
    else:
        response = HttpResponse(message, status=429, content_type="text/plain; charset=utf-8")
    response["Retry-After"] = str(seconds)
    return response
