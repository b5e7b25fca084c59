"""Keeps the API's promise of JSON errors outside ninja's reach: bodies over the size limit are
refused before anything reads them, any error page under /api/ or from the send URL
(Django's 404 and 500 pages, a 405) is answered in the API's error format instead of HTML, and
a view's error that says the database or the cache is out of reach answers 503 with Retry-After
(api/errors.py, unavailable_response) instead of Django's 500."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from mailservice import conf
from mailservice.api.errors import message_response, too_big_response, unavailable_response

logger = logging.getLogger(__name__)

API_PREFIX = "/api/"
SEND_URL = "/"


def is_gateway_path(path: str) -> bool:
    return path == SEND_URL or path.startswith(API_PREFIX)


class GatewayErrorsMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not is_gateway_path(request.path):
            return self.get_response(request)
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > conf.max_request_bytes():
            return too_big_response()
        response = self.get_response(request)
        content_type = response.get("Content-Type", "")
        if response.status_code >= 400 and not content_type.startswith("application/json"):
            message = response.reason_phrase or "Error"
            if response.status_code >= 500:
                message = "Internal error; it has been logged"
            replacement = message_response(response.status_code, f"{message}.")
            if response.has_header("Allow"):
                replacement["Allow"] = response["Allow"]
            return replacement
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        """The send URL's (and any other gateway view's) outage errors: 503, not a 500 page.
        Ninja's routes answer theirs in api/errors.py before an error gets this far."""
        if not is_gateway_path(request.path):
            return None
        return unavailable_response(request, exception)
