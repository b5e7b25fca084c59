"""`Authorization: Bearer <key>` on every API call except the docs and the schema."""
from __future__ import annotations

from django.http import HttpRequest
from ninja.security import HttpBearer

from mailservice.api.errors import UNAUTHORIZED
from mailservice.exceptions import AuthenticationFailed, FieldError
from mailservice.models import ApiKey
from mailservice.services.keys import api_key_authenticate

# Query parameters that look like someone put a key in the URL, where logs and proxies keep it.
KEY_PARAMETERS = frozenset({"key", "api_key", "apikey", "token", "access_token", "auth"})


def refuse_key_in_url(request: HttpRequest) -> None:
    if KEY_PARAMETERS & {name.lower() for name in request.GET}:
        raise AuthenticationFailed(
            [FieldError(None, "API keys are accepted only in the Authorization header, never in the URL.")]
        )


class ApiKeyAuth(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str) -> ApiKey | None:
        refuse_key_in_url(request)
        return api_key_authenticate(raw_key=token.strip())


def authenticate_request(request: HttpRequest) -> ApiKey:
    """For views outside ninja (the send URL): the API key, or AuthenticationFailed (401)."""
    refuse_key_in_url(request)
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    api_key = api_key_authenticate(raw_key=token.strip()) if scheme.lower() == "bearer" else None
    if api_key is None:
        raise AuthenticationFailed([FieldError(None, UNAUTHORIZED)])
    return api_key
