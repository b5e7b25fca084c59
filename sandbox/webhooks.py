"""Posting tracking webhooks back to the service, after a delay, like a provider does.

Each accepted message schedules one job; when it is due, the provider builds its signed POSTs
(timestamps and signatures are made at posting time, as a provider makes them) and a background
thread sends them with the standard library. `flush()` posts everything pending at once and
waits for posts in progress, so tests need no sleeps. A failed post is recorded, not retried.
"""

from __future__ import annotations

import base64
import heapq
import itertools
import logging
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sandbox.providers.base import Provider, WebhookPost
from sandbox.store import ReceivedMessage

logger = logging.getLogger(__name__)

HISTORY_SIZE = 1000
MAX_ERROR_BODY = 300


@dataclass
class WebhookResult:
    """One POST made and what the service answered (the control API's webhook history)."""

    post: WebhookPost
    status: int | None  # the service's HTTP status; None when it could not be reached
    error: str | None
    posted_at: float

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def as_json(self) -> dict[str, Any]:
        post = self.post
        return {
            "provider": post.provider,
            "url": post.url,
            "events": post.events,
            "recipients": post.recipients,
            "message_ids": post.message_ids,
            "status": self.status,
            "ok": self.ok,
            "error": self.error,
            "posted_at": datetime.fromtimestamp(self.posted_at, tz=UTC).isoformat(),
        }


@dataclass
class _Job:
    message: ReceivedMessage
    results: list[WebhookResult] = field(default_factory=list)


class WebhookDispatcher:
    """Schedules, signs (through each provider) and posts tracking webhooks."""

    def __init__(
        self,
        providers: dict[str, Provider],
        *,
        base_url: str,
        delay: float,
        basic_auth: str,
        timeout: float = 10.0,
        clock=time.time,
    ):
        self.providers = providers
        self.base_url = base_url.rstrip("/")
        self.delay = delay
        self.basic_auth = basic_auth  # Anymail's WEBHOOK_SECRET, "user:password"; empty: none
        self.timeout = timeout
        self._clock = clock
        self._heap: list[tuple[float, int, _Job]] = []
        self._seq = itertools.count()
        self._in_flight: list[_Job] = []
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._history: deque[WebhookResult] = deque(maxlen=HISTORY_SIZE)
        # Never through an HTTP proxy from the environment: the target is the local service.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    @property
    def enabled(self) -> bool:
        return bool(self.base_url)

    # Lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="sandbox-webhooks", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    # Scheduling -------------------------------------------------------------------------

    def schedule(self, message: ReceivedMessage) -> int:
        """Queue the events of a message's accepted recipients; returns how many events."""
        if not self.enabled:
            return 0
        count = sum(len(recipient.events()) for recipient in message.deliverable())
        if not count:
            return 0
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + self.delay, next(self._seq), _Job(message)))
            self._cond.notify_all()
        return count

    def pending(self) -> int:
        with self._cond:
            return len(self._heap) + len(self._in_flight)

    def flush(self, timeout: float = 30.0) -> list[WebhookResult]:
        """Post every pending job now and wait for those being posted; returns their results."""
        with self._cond:
            jobs = [job for _, _, job in sorted(self._heap)]
            self._heap.clear()
            already_posting = list(self._in_flight)
            self._in_flight.extend(jobs)
        try:
            for job in jobs:
                self._post_job(job)
        finally:
            with self._cond:
                for job in jobs:
                    self._in_flight.remove(job)
                self._cond.notify_all()
        with self._cond:
            self._cond.wait_for(lambda: not any(job in self._in_flight for job in already_posting), timeout)
        return [result for job in already_posting + jobs for result in job.results]

    def history(self, limit: int | None = None) -> list[WebhookResult]:
        with self._cond:
            items = list(self._history)
        return items[-limit:] if limit else items

    def clear(self) -> None:
        """Forget pending jobs and the history (a reset)."""
        with self._cond:
            self._heap.clear()
            self._history.clear()

    # Posting ----------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping:
                    if not self._heap:
                        self._cond.wait()
                        continue
                    wait = self._heap[0][0] - time.monotonic()
                    if wait <= 0:
                        break
                    self._cond.wait(wait)
                if self._stopping:
                    return
                _, _, job = heapq.heappop(self._heap)
                self._in_flight.append(job)
            try:
                self._post_job(job)
            except Exception:  # a bug here must not kill the thread that posts every webhook
                logger.exception("sandbox webhook job failed", extra={"provider": job.message.provider})
            finally:
                with self._cond:
                    self._in_flight.remove(job)
                    self._cond.notify_all()

    def _post_job(self, job: _Job) -> list[WebhookResult]:
        message = job.message
        provider = self.providers[message.provider]
        events = [(recipient, event) for recipient in message.deliverable() for event in recipient.events()]
        posts = provider.webhook_posts(
            message, events, base_url=self.base_url, basic_auth=self.basic_auth, now=self._clock()
        )
        for post in posts:
            job.results.append(self._post(post))
        return job.results

    def _post(self, post: WebhookPost) -> WebhookResult:
        headers = {"Content-Type": post.content_type, **post.headers}
        if self.basic_auth:
            token = base64.b64encode(self.basic_auth.encode("utf-8")).decode("ascii")
            headers["Authorization"] = f"Basic {token}"
        request = urllib.request.Request(post.url, data=post.body, headers=headers, method="POST")
        status: int | None = None
        error: str | None = None
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                status = response.status
                response.read()
        except urllib.error.HTTPError as err:
            status = err.code
            error = " ".join(err.read().decode("utf-8", "replace").split())[:MAX_ERROR_BODY] or err.reason
            err.close()
        except (urllib.error.URLError, OSError) as err:
            error = str(getattr(err, "reason", err))
        result = WebhookResult(post, status, error, posted_at=self._clock())
        with self._cond:
            self._history.append(result)
        level = logging.INFO if result.ok else logging.WARNING
        logger.log(
            level,
            "sandbox webhook provider=%s events=%s status=%s%s",
            post.provider,
            ",".join(post.events),
            status,
            f" error={error}" if error else "",
            extra={"provider": post.provider, "status": status, "message_ids": post.message_ids},
        )
        return result
