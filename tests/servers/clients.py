"""An API client as the tests on real servers use it: one POST /api/messages, its answer kept
whatever it is (a status, a 503's Retry-After, or no HTTP answer at all); and a burst of them
from several threads."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field

from tests.e2e.processes import OPENER


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


@dataclass
class Burst:
    accepted: dict[int, tuple[str, float]] = field(default_factory=dict)  # index -> (id, time.time())
    refusals: Counter = field(default_factory=Counter)  # "status body" of each answer but a 202


def post_burst(url: str, api_key: str, count: int, *, clients: int, prefix: str, text: str) -> Burst:
    """`count` messages (subject and Idempotency-Key `prefix` + their index) posted by `clients`
    threads; a message refused is posted again, up to 5 times in all."""
    burst, lock = Burst(), threading.Lock()
    indexes = iter(range(count))

    def client() -> None:
        while True:
            with lock:
                i = next(indexes, None)
            if i is None:
                return
            fields = {"to": f"rcpt{i}@example.net", "subject": f"{prefix}{i}", "text": text}
            body = json.dumps(fields).encode()
            for attempt in range(5):
                answer = post_message(url, api_key, f"{prefix}{i}", body)
                with lock:
                    if answer.status == 202:
                        burst.accepted[i] = (json.loads(answer.body)["id"], time.time())
                        break
                    burst.refusals[f"{answer.status} {answer.body[:120]!r}"] += 1
                time.sleep(0.2 * (attempt + 1))

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    return burst
