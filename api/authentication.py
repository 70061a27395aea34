"""How API requests authenticate, beyond DRF's defaults: tokens with a maximum age."""
from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed

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

