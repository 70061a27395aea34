"""API tokens of a person: create (or replace), read, revoke. One token per user (DRF authtoken)."""
from __future__ import annotations

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
