"""API tokens of a person: create (or replace), read, revoke. One token per user (DRF authtoken).

A token ends when it is revoked or replaced, when its owner's password changes, and, with
``DEFECTBENCH_API_TOKEN_MAX_AGE_SECONDS``, that many seconds after it was created.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone
from rest_framework.authtoken.models import Token


def current(user) -> Token | None:
    return Token.objects.filter(user=user).first()


def create(user) -> Token:
    """A new token; any earlier one stops working at once."""
    Token.objects.filter(user=user).delete()
    return Token.objects.create(user=user)


def revoke(user) -> bool:
    deleted, _ = Token.objects.filter(user=user).delete()
    return bool(deleted)


def expires_at(token: Token) -> datetime | None:
    """When ``token`` stops working by age (None: no maximum age is set)."""
    max_age = settings.DEFECTBENCH_API_TOKEN_MAX_AGE_SECONDS
    return token.created + timedelta(seconds=max_age) if max_age > 0 else None


def is_expired(token: Token) -> bool:
    end = expires_at(token)
    return end is not None and end <= timezone.now()


def valid_or_new(user) -> Token:
    """The user's token if it still works, else a new one (what a password login hands out)."""
    token = current(user)
    return token if token is not None and not is_expired(token) else create(user)


def revoke_after_password_change(sender, instance, created, **kwargs):
    """``post_save`` of the user model: a new password ends the user's tokens.

    ``_password`` is Django's own marker of a password set since the last save (``set_password``:
    the admin's password and add-user forms, ``changepassword``, ``setup_demo``); the model's
    save() passes it to the password validators' ``password_changed``. A hash upgrade at login is
    not a change: Django clears the marker before saving it.
    """
    if not created and getattr(instance, "_password", None) is not None:
        revoke(instance)
