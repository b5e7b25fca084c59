"""The plain HTTP values the listeners (`sandbox.server`) and the apps behind them exchange.

They are the sandbox's own, not Django's: the sandbox runs on the standard library alone
(`python -m sandbox` imports no Django), and its apps are the provider APIs and the control API.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ApiRequest:
    """One request to a provider API or to the control API, body read in full."""

    method: str
    path: str  # without the query string
    query: dict[str, list[str]]
    headers: Mapping[str, str]  # case-insensitive (an email.message.Message)
    body: bytes = b""

    @property
    def content_type(self) -> str:
        return (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))


@dataclass
class ApiResponse:
    """One answer, in whatever format the API answering it uses."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, data: Any, headers: dict[str, str] | None = None) -> ApiResponse:
        return cls(status, json.dumps(data).encode("utf-8"), "application/json", dict(headers or {}))

    @classmethod
    def text(cls, status: int, text: str, headers: dict[str, str] | None = None) -> ApiResponse:
        return cls(status, text.encode("utf-8"), "text/plain; charset=utf-8", dict(headers or {}))


@dataclass
class Reply:
    """What the HTTP layer does: answer `response` (None: close the connection unanswered, as
    a provider that is going down does), after holding it back for `hold` seconds or until the
    client gives up (how a read timeout is simulated)."""

    response: ApiResponse | None
    hold: float = 0.0
