"""The control API under /_sandbox/ on the main port: faults, received messages, webhooks.

JSON in, JSON out; errors are {"error": "..."} with 400/404/405. docs/sandbox.md lists every
route.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sandbox.conf import API_PREFIXES, PROVIDERS
from sandbox.exceptions import FaultSpecError, UnknownProviderError
from sandbox.faults import Fault
from sandbox.providers.base import HttpRequest, HttpResponse
from sandbox.sending import Reply

if TYPE_CHECKING:
    from sandbox.app import Sandbox

Handler = Callable[[HttpRequest, dict[str, str]], HttpResponse]


class ControlApp:
    def __init__(self, sandbox: Sandbox):
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

    def __call__(self, request: HttpRequest) -> Reply:
        for pattern, methods in self.routes:
            match = pattern.match(request.path)
            if not match:
                continue
            handler = methods.get(request.method)
            if handler is None:
                allow = {"Allow": ", ".join(methods)}
                return Reply(HttpResponse.json(405, {"error": f"{request.method} not allowed"}, allow))
            try:
                return Reply(handler(request, match.groupdict()))
            except UnknownProviderError as err:
                return Reply(HttpResponse.json(404, {"error": str(err)}))
            except FaultSpecError as err:
                return Reply(HttpResponse.json(400, {"error": str(err)}))
            except OSError as err:  # a provider's port could not be opened again after "down"
                return Reply(HttpResponse.json(500, {"error": f"cannot listen: {err}"}))
        return Reply(HttpResponse.json(404, {"error": self._not_found_hint(request.path)}))

    def _not_found_hint(self, path: str) -> str:
        for name in PROVIDERS:
            if path.startswith(API_PREFIXES[name].rstrip("/")):
                return f"The {name} API is served on its own port: {self.sandbox.api_url(name)}"
        return f"No route {path}; see {self.sandbox.control_url}"

    # Overview ---------------------------------------------------------------------------

    def overview(self, request: HttpRequest, params: dict[str, str]) -> HttpResponse:
        return HttpResponse.json(200, self.sandbox.describe())

    def reset(self, request: HttpRequest, params: dict[str, str]) -> HttpResponse:
        self.sandbox.reset()
        return HttpResponse.json(200, self.sandbox.describe())

    # Messages ---------------------------------------------------------------------------

    def messages(self, request: HttpRequest, params: dict[str, str]) -> HttpResponse:
        provider = _param(request, "provider")
        if provider and provider not in PROVIDERS:
            raise UnknownProviderError(provider, PROVIDERS)
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
        return HttpResponse.json(200, {"count": len(messages), "messages": messages})

    def clear_messages(self, request: HttpRequest, params: dict[str, str]) -> HttpResponse:
        provider = _param(request, "provider")
        if provider and provider not in PROVIDERS:
            raise UnknownProviderError(provider, PROVIDERS)
        return HttpResponse.json(200, {"deleted": self.sandbox.store.clear(provider)})

    # Faults -----------------------------------------------------------------------------

    def all_faults(self, request: HttpRequest, params: dict[str, str]) -> HttpResponse:
        faults = self.sandbox.faults.all()
        return HttpResponse.json(200, {name: fault.as_json() for name, fault in faults.items()})

    def clear_faults(self, request: HttpRequest, params: dict[str, str]) -> HttpResponse:
        self.sandbox.faults.clear()
        return self.all_faults(request, params)

    def get_fault(self, request: HttpRequest, params: dict[str, str]) -> HttpResponse:
        return HttpResponse.json(200, self.sandbox.faults.get(params["provider"]).as_json())

    def set_fault(self, request: HttpRequest, params: dict[str, str]) -> HttpResponse:
        self.sandbox.faults.get(params["provider"])  # 404 for an unknown provider before reading the body
        try:
            data: Any = json.loads(request.body.decode("utf-8") or "{}")
        except (ValueError, UnicodeDecodeError) as err:
            raise FaultSpecError(f"The body must be a JSON object: {err}") from None
        fault = self.sandbox.set_fault(params["provider"], Fault.from_json(data))
        return HttpResponse.json(200, fault.as_json())

    def clear_fault(self, request: HttpRequest, params: dict[str, str]) -> HttpResponse:
        return HttpResponse.json(200, self.sandbox.set_fault(params["provider"], Fault()).as_json())

    # Webhooks ---------------------------------------------------------------------------

    def webhook_history(self, request: HttpRequest, params: dict[str, str]) -> HttpResponse:
        limit = _param(request, "limit")
        history = self.sandbox.webhooks.history(int(limit) if limit and limit.isdigit() else None)
        posted = [result.as_json() for result in history]
        return HttpResponse.json(200, {"pending": self.sandbox.webhooks.pending(), "posted": posted})

    def flush_webhooks(self, request: HttpRequest, params: dict[str, str]) -> HttpResponse:
        results = self.sandbox.webhooks.flush()
        return HttpResponse.json(200, {"posted": [result.as_json() for result in results]})

    def clear_webhooks(self, request: HttpRequest, params: dict[str, str]) -> HttpResponse:
        self.sandbox.webhooks.clear()
        return HttpResponse.json(200, {"pending": 0, "posted": []})


def _param(request: HttpRequest, name: str) -> str | None:
    values = request.query.get(name)
    return values[-1] if values else None
