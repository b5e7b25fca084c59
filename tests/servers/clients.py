"""An API client as the tests on real servers use it: one POST /api/messages, its answer kept
whatever it is (a status, a 503's Retry-After, or no HTTP answer at all)."""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass

from tests.servers.base import OPENER


@dataclass(frozen=True)
class Answer:
    status: int  # 0: no HTTP answer at all (connection refused or reset, timeout)
    retry_after: str | None
    body: bytes


def post_message(url: str, api_key: str, idempotency_key: str, body: bytes) -> Answer:
    """POST `body` to `url`/api/messages with the key and an Idempotency-Key; never raises."""
    request = urllib.request.Request(
        url + "/api/messages",
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {api_key}",
            "Idempotency-Key": idempotency_key,
        },
    )
    try:
        with OPENER.open(request, timeout=30) as response:
            return Answer(response.status, response.headers.get("Retry-After"), response.read())
    except urllib.error.HTTPError as err:
        return Answer(err.code, err.headers.get("Retry-After"), err.read())
    except OSError as err:
        return Answer(0, None, repr(err).encode())
