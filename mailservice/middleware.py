"""Keeps the API's promise of JSON errors outside ninja's reach: bodies over the size limit are
refused before anything reads them, and any error page under /api/ or from the send URL
(Django's 404 and 500 pages, a 405) is answered in the API's error format instead of HTML."""
from __future__ import annotations

import logging
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from mailservice import conf
from mailservice.api.errors import error_response, too_big_response
from mailservice.exceptions import FieldError

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
            replacement = error_response(response.status_code, [FieldError(None, f"{message}.")])
            if response.has_header("Allow"):
                replacement["Allow"] = response["Allow"]
            return replacement
        return response
