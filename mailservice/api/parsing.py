"""How the API reads a JSON body: measured on its bytes before it is parsed, so a hostile body
is refused before it builds millions of objects (validation.parse_json_body; docs/security.md,
"Input limits")."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja.parser import Parser

from mailservice.validation import parse_json_body


class GatewayParser(Parser):
    """Ninja's parser with the gateway's body limits. Ninja turns any error raised here into a
    400 carrying it as the cause; api/errors.py answers the cause's own status (413, 422)."""

    def parse_body(self, request: HttpRequest) -> Any:
        return parse_json_body(request.body)
