"""The control API under /_sandbox/ on the main port: faults, received messages, webhooks.

JSON in, JSON out; errors are {"error": "..."} with 400/404/405. docs/sandbox.md lists every
route.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, Protocol

from sandbox.exceptions import FaultSpecError, UnknownProviderError
from sandbox.faults import Fault, FaultBoard
from sandbox.providers import PROVIDERS, provider_spec
from sandbox.store import MessageStore
from sandbox.webhooks import WebhookDispatcher
from sandbox.wire import ApiRequest, ApiResponse, Reply

Handler = Callable[[ApiRequest, dict[str, str]], ApiResponse]


class Controlled(Protocol):
    """What the control API reads and changes: the parts of a running sandbox (`sandbox.app.Sandbox`
    is one) and where its APIs are. A protocol, so the app that owns the listeners can own this
    API too without the two modules importing each other."""

    faults: FaultBoard
    store: MessageStore
    webhooks: WebhookDispatcher

    @property
    def control_url(self) -> str: ...

    def api_url(self, provider: str) -> str: ...

    def describe(self) -> dict[str, Any]: ...

    def reset(self) -> None: ...


class ControlApp:
    def __init__(self, sandbox: Controlled):
        self.sandbox = sandbox
        self.routes: list[tuple[re.Pattern[str], dict[str, Handler]]] = [
            (re.compile(r"^/(_sandbox/?)?$"), {"GET": self.overview}),
            (re.compile(r"^/_sandbox/messages/?$"), {"GET": self.messages, "DELETE": self.clear_messages}),
            (re.compile(r"^/_sandbox/faults/?$"), {"GET": self.all_faults, "DELETE": self.clear_faults}),
            (
                re.compile(r"^/_sandbox/faults/(?P<provider>[^/]+)/?$"),
                {
                    "GET": self.get_fault,
                    "POST": self.set_fault,
                    "PUT": self.set_fault,
                    "DELETE": self.clear_fault,
                },
            ),
            (
                re.compile(r"^/_sandbox/webhooks/?$"),
                {"GET": self.webhook_history, "DELETE": self.clear_webhooks},
            ),
            (re.compile(r"^/_sandbox/webhooks/flush/?$"), {"POST": self.flush_webhooks}),
            (re.compile(r"^/_sandbox/reset/?$"), {"POST": self.reset}),
        ]

    def __call__(self, request: ApiRequest) -> Reply:
        for pattern, methods in self.routes:
            match = pattern.match(request.path)
            if not match:
                continue
            handler = methods.get(request.method)
            if handler is None:
                allow = {"Allow": ", ".join(methods)}
                return Reply(ApiResponse.json(405, {"error": f"{request.method} not allowed"}, allow))
            try:
                return Reply(handler(request, match.groupdict()))
            except UnknownProviderError as err:
                return Reply(ApiResponse.json(404, {"error": str(err)}))
            except FaultSpecError as err:
                return Reply(ApiResponse.json(400, {"error": str(err)}))
            except OSError as err:  # a provider's port could not be opened again after "down"
                return Reply(ApiResponse.json(500, {"error": f"cannot listen: {err}"}))
        return Reply(ApiResponse.json(404, {"error": self._not_found_hint(request.path)}))

    def _not_found_hint(self, path: str) -> str:
        for spec in PROVIDERS:
            if path.startswith(spec.api_prefix.rstrip("/")):
                return f"The {spec.name} API is served on its own port: {self.sandbox.api_url(spec.name)}"
        return f"No route {path}; see {self.sandbox.control_url}"

    # Overview ---------------------------------------------------------------------------

    def overview(self, request: ApiRequest, params: dict[str, str]) -> ApiResponse:
        return ApiResponse.json(200, self.sandbox.describe())

    def reset(self, request: ApiRequest, params: dict[str, str]) -> ApiResponse:
        self.sandbox.reset()
        return ApiResponse.json(200, self.sandbox.describe())

    # Messages ---------------------------------------------------------------------------

    def messages(self, request: ApiRequest, params: dict[str, str]) -> ApiResponse:
        provider = _provider_param(request)
        limit = _param(request, "limit")
        if limit is not None and not limit.isdigit():
            raise FaultSpecError("limit must be a non-negative integer.")
        records = self.sandbox.store.list(
            provider=provider,
            recipient=_param(request, "recipient"),
            outcome=_param(request, "outcome"),
            limit=int(limit) if limit is not None else None,
        )
        messages = [record.as_json() for record in records]
        return ApiResponse.json(200, {"count": len(messages), "messages": messages})

    def clear_messages(self, request: ApiRequest, params: dict[str, str]) -> ApiResponse:
        provider = _provider_param(request)
        return ApiResponse.json(200, {"deleted": self.sandbox.store.clear(provider)})

    # Faults -----------------------------------------------------------------------------

    def all_faults(self, request: ApiRequest, params: dict[str, str]) -> ApiResponse:
        faults = self.sandbox.faults.all()
        return ApiResponse.json(200, {name: fault.as_json() for name, fault in faults.items()})

    def clear_faults(self, request: ApiRequest, params: dict[str, str]) -> ApiResponse:
        self.sandbox.faults.clear()
        return self.all_faults(request, params)

    def get_fault(self, request: ApiRequest, params: dict[str, str]) -> ApiResponse:
        return ApiResponse.json(200, self.sandbox.faults.get(params["provider"]).as_json())

    def set_fault(self, request: ApiRequest, params: dict[str, str]) -> ApiResponse:
        self.sandbox.faults.get(params["provider"])  # 404 for an unknown provider before reading the body
        try:
            data: Any = json.loads(request.body.decode("utf-8") or "{}")
        except (ValueError, UnicodeDecodeError) as err:
            raise FaultSpecError(f"The body must be a JSON object: {err}") from None
        fault = self.sandbox.faults.set(params["provider"], Fault.from_json(data))
        return ApiResponse.json(200, fault.as_json())

    def clear_fault(self, request: ApiRequest, params: dict[str, str]) -> ApiResponse:
        return ApiResponse.json(200, self.sandbox.faults.set(params["provider"], Fault()).as_json())

    # Webhooks ---------------------------------------------------------------------------

    def webhook_history(self, request: ApiRequest, params: dict[str, str]) -> ApiResponse:
        limit = _param(request, "limit")
        history = self.sandbox.webhooks.history(int(limit) if limit and limit.isdigit() else None)
        posted = [result.as_json() for result in history]
        return ApiResponse.json(200, {"pending": self.sandbox.webhooks.pending(), "posted": posted})

    def flush_webhooks(self, request: ApiRequest, params: dict[str, str]) -> ApiResponse:
        results = self.sandbox.webhooks.flush()
        return ApiResponse.json(200, {"posted": [result.as_json() for result in results]})

    def clear_webhooks(self, request: ApiRequest, params: dict[str, str]) -> ApiResponse:
        self.sandbox.webhooks.clear()
        return ApiResponse.json(200, {"pending": 0, "posted": []})


def _param(request: ApiRequest, name: str) -> str | None:
    values = request.query.get(name)
    return values[-1] if values else None


def _provider_param(request: ApiRequest) -> str | None:
    """The `provider` filter, if any; an unknown provider is a 404, not an empty list."""
    provider = _param(request, "provider")
    return provider_spec(provider).name if provider else None
