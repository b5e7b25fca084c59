"""A small client of a running sandbox's control API (the CLI's subcommands, tests, scripts)."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlencode

from sandbox.conf import DEFAULT_HOST, DEFAULT_PORT, URL_VARIABLE, VARIABLES
from sandbox.exceptions import ControlError
from sandbox.faults import Fault


def default_url() -> str:
    """SANDBOX_URL, else the control port a default `python -m sandbox` listens on."""
    port = os.environ.get(VARIABLES["port"][0]) or DEFAULT_PORT
    return os.environ.get(URL_VARIABLE) or f"http://{DEFAULT_HOST}:{port}"


class SandboxClient:
    def __init__(self, base_url: str | None = None, timeout: float = 30.0):
        base = (base_url or default_url()).rstrip("/")
        if base.endswith("/_sandbox"):
            base = base[: -len("/_sandbox")]
        self.base_url = base
        self.timeout = timeout
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def status(self) -> dict[str, Any]:
        return self._call("GET", "/_sandbox/")

    def faults(self) -> dict[str, Any]:
        return self._call("GET", "/_sandbox/faults")

    def set_fault(self, provider: str, fault: Fault | dict[str, Any]) -> dict[str, Any]:
        data = fault.as_json() if isinstance(fault, Fault) else fault
        return self._call("POST", f"/_sandbox/faults/{provider}", data)

    def clear_fault(self, provider: str | None = None) -> dict[str, Any]:
        return self._call("DELETE", f"/_sandbox/faults/{provider}" if provider else "/_sandbox/faults")

    def messages(self, **filters: Any) -> list[dict[str, Any]]:
        """Filters: provider, recipient, outcome, limit."""
        return self._call("GET", "/_sandbox/messages", query=filters)["messages"]

    def clear_messages(self, provider: str | None = None) -> int:
        return self._call("DELETE", "/_sandbox/messages", query={"provider": provider})["deleted"]

    def webhooks(self) -> dict[str, Any]:
        return self._call("GET", "/_sandbox/webhooks")

    def flush_webhooks(self) -> list[dict[str, Any]]:
        return self._call("POST", "/_sandbox/webhooks/flush")["posted"]

    def reset(self) -> dict[str, Any]:
        return self._call("POST", "/_sandbox/reset")

    def _call(self, method: str, path: str, data: Any = None, query: dict[str, Any] | None = None) -> Any:
        query = {key: value for key, value in (query or {}).items() if value is not None}
        url = self.base_url + path + (f"?{urlencode(query)}" if query else "")
        body = json.dumps(data).encode("utf-8") if data is not None else None
        headers = {"Content-Type": "application/json"}
        request = urllib.request.Request(url, data=body, method=method, headers=headers)
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return json.loads(response.read().decode("utf-8") or "null")
        except urllib.error.HTTPError as err:
            text = err.read().decode("utf-8", "replace")
            err.close()
            try:
                message = json.loads(text).get("error") or text
            except (ValueError, AttributeError):
                message = text
            raise ControlError(
                f"{method} {path}: HTTP {err.code}: {message}", status=err.code, body=text
            ) from None
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise ControlError(
                f"Cannot reach the sandbox at {self.base_url} ({reason}); is it running?"
            ) from None
