"""How API requests authenticate, beyond DRF's defaults: tokens with a maximum age, and the
answer to a password login (POST /api/auth/token/) from a locked-out client."""
from rest_framework import status
from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import APIException, AuthenticationFailed

from annotator import lockout
from api import tokens


class ExpiringTokenAuthentication(TokenAuthentication):
    """DRF's ``Authorization: Token <key>``; a token past ``DEFECTBENCH_API_TOKEN_MAX_AGE_SECONDS``
    gets 401 "Token expired" (with ``WWW-Authenticate: Token``, like any refused token)."""

    def authenticate_credentials(self, key):
        user, token = super().authenticate_credentials(key)
        if tokens.is_expired(token):
            raise AuthenticationFailed(
                "Token expired: create a new one on the API token page (/accounts/api-token/)."
            )
        return user, token


class LoginLockedOut(APIException):
    """429 with ``Retry-After``: too many failed logins from the client's address."""

    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    default_code = "locked_out"

    def __init__(self, request):
        # DRF's exception handler sends ``wait`` as the Retry-After header.
        self.wait = lockout.retry_after_seconds(request)
        super().__init__(lockout.lockout_message(self.wait))
