"""One reusable stand-in for the SendGrid, Mailgun and Mandrill HTTP APIs, built on `responses`:
the fake of the unit tests (tests with real processes use tests/esp_server.py).

Tests say what each provider does (`ok`, `fail`, `down`, `timeout`, ...) and then read what each
provider received; or, for a test that registers its answers itself, `mock_sendgrid` and
`mock_mailgun` add one answer each. URLs are fake hosts: nothing here can reach the internet.
"""

from __future__ import annotations

import json
from typing import Any

import requests
import responses
from urllib3.exceptions import ProtocolError

SENDGRID_API_URL = "https://sendgrid.esp.test/v3/"
MAILGUN_API_URL = "https://mailgun.esp.test/v3/"
MAILGUN_EU_API_URL = "https://mailgun-eu.esp.test/v3/"
MANDRILL_API_URL = "https://mandrill.esp.test/api/1.0/"

SENDGRID_KEY = "SG.sendgrid-secret-key-0001"
MAILGUN_KEY = "key-mailgun-secret-0002"
MANDRILL_KEY = "mandrill-secret-key-0003"

ENDPOINTS = {
    "sendgrid": SENDGRID_API_URL + "mail/send",
    "mailgun": MAILGUN_API_URL + "mg.example.com/messages",
    "mailgun-eu": MAILGUN_EU_API_URL + "eu.example.com/messages",
    "mandrill": MANDRILL_API_URL + "messages/send.json",
}

SENDGRID = {
    "NAME": "sendgrid",
    "BACKEND": "sendgrid",
    "OPTIONS": {"api_key": SENDGRID_KEY, "api_url": SENDGRID_API_URL},
}
MAILGUN = {
    "NAME": "mailgun",
    "BACKEND": "anymail.backends.mailgun.EmailBackend",
    "OPTIONS": {"api_key": MAILGUN_KEY, "sender_domain": "mg.example.com", "api_url": MAILGUN_API_URL},
}
MAILGUN_EU = {
    "NAME": "mailgun-eu",
    "BACKEND": "mailgun",
    "OPTIONS": {
        "api_key": MAILGUN_KEY + "-eu",
        "sender_domain": "eu.example.com",
        "api_url": MAILGUN_EU_API_URL,
    },
}
MANDRILL = {
    "NAME": "mandrill",
    "BACKEND": "mandrill",
    "OPTIONS": {"api_key": MANDRILL_KEY, "api_url": MANDRILL_API_URL},
}

CHAIN = [SENDGRID, MAILGUN, MANDRILL]


def mock_sendgrid(rsps: responses.RequestsMock, status: int = 202, body: str = "") -> None:
    """SendGrid's send endpoint answers `status` with `body` (202, empty: accepted)."""
    rsps.add(responses.POST, ENDPOINTS["sendgrid"], status=status, body=body)


def mock_mailgun(
    rsps: responses.RequestsMock,
    status: int = 200,
    message_id: str = "<mg-1@mg.example.com>",
    body: str | None = None,
) -> None:
    """Mailgun's send endpoint answers `status` (200 with `message_id`: accepted)."""
    if body is None:
        body = json.dumps({"id": message_id, "message": "Queued. Thank you."}) if status == 200 else "error"
    rsps.add(responses.POST, ENDPOINTS["mailgun"], status=status, body=body)


def success(provider: str, request: requests.PreparedRequest) -> tuple[int, dict, str]:
    """What each real API answers to an accepted send."""
    if provider == "sendgrid":
        return 202, {}, ""
    if provider.startswith("mailgun"):
        return 200, {}, json.dumps({"id": "<20261125.1@mg.example.com>", "message": "Queued. Thank you."})
    payload = json.loads(request.body)
    return (
        200,
        {},
        json.dumps(
            [
                {"email": to["email"], "status": "sent", "_id": f"md-{i}", "reject_reason": None}
                for i, to in enumerate(payload["message"]["to"])
            ]
        ),
    )


class ESPMock:
    """Answer every provider's send endpoint; by default each one accepts the message."""

    def __init__(self) -> None:
        self.mock = responses.RequestsMock(assert_all_requests_are_fired=False)
        self.behaviour: dict[str, Any] = {}
        self.received: dict[str, list[requests.PreparedRequest]] = {name: [] for name in ENDPOINTS}
        for name, url in ENDPOINTS.items():
            self.mock.add_callback(responses.POST, url, callback=self._callback(name))

    def start(self) -> None:
        self.mock.start()

    def stop(self) -> None:
        self.mock.stop()
        self.mock.reset()

    def _callback(self, name: str):
        def answer(request: requests.PreparedRequest):
            self.received[name].append(request)
            behaviour = self.behaviour.get(name)
            if isinstance(behaviour, BaseException):
                raise behaviour
            if callable(behaviour):
                return behaviour(request)
            if behaviour is not None:
                return behaviour
            return success(name, request)

        return answer

    # What a provider does ------------------------------------------------------------------

    def ok(self, name: str) -> None:
        self.behaviour.pop(name, None)

    def fail(self, name: str, status: int, body: Any = None) -> None:
        text = body if isinstance(body, str) else json.dumps(body or {"errors": [{"message": "failure"}]})
        self.behaviour[name] = (status, {}, text)

    def down(self, name: str) -> None:
        self.behaviour[name] = requests.ConnectionError("Connection refused")

    def connect_timeout(self, name: str) -> None:
        self.behaviour[name] = requests.ConnectTimeout("connect timed out")

    def read_timeout(self, name: str) -> None:
        self.behaviour[name] = requests.ReadTimeout("read timed out")

    def aborted(self, name: str) -> None:
        """The connection dropped after the request went out."""
        self.behaviour[name] = requests.ConnectionError(
            ProtocolError("Connection aborted.", ConnectionResetError())
        )

    def answer(self, name: str, status: int, body: str) -> None:
        self.behaviour[name] = (status, {}, body)

    # What a provider got -------------------------------------------------------------------

    def calls(self, name: str) -> int:
        return len(self.received[name])

    def total_calls(self) -> int:
        return sum(len(requests_) for requests_ in self.received.values())

    def json_bodies(self, name: str) -> list[dict]:
        return [json.loads(request.body) for request in self.received[name]]
