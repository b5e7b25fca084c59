"""What the sandbox received: one record per send request, bounded, queryable as JSON.

Records keep what tests and a watching developer need (who, subject, ids, tags, metadata, what
the sandbox answered) and never bodies, attachments or API keys.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sandbox.conventions import EVENTS_BY_FATE, REFUSED, Fate, SimulatedEvent


class ReplyKind(StrEnum):
    """Which kind of reply the sandbox gave a send request: a record's `outcome` (control API,
    `--outcome` filter). Not a delivery outcome: the failover backend and the gateway have their
    own for what happened to an attempt."""

    ACCEPTED = "accepted"  # 2xx, at least one recipient taken
    REFUSED = "refused"  # every recipient, or the request, refused for its recipients
    ERROR = "error"  # an error answer: injected fault, wrong key, malformed request
    TIMEOUT = "timeout"  # accepted, answer held back (the client saw a read timeout)


@dataclass
class ReceivedRecipient:
    email: str
    kind: str = "to"  # to, cc, bcc
    fate: Fate = Fate.DELIVER
    status: str | None = None  # what the send API reported (Mandrill: sent/queued/rejected/invalid)
    message_id: str | None = None  # the provider message id Anymail reports for this recipient
    reject_reason: str | None = None
    # What the provider echoes back in its events (SendGrid custom_args incl. anymail_id,
    # Mandrill recipient_metadata); message-level metadata lives on the message.
    metadata: dict[str, Any] = field(default_factory=dict)
    where: str = ""  # where the address sits in the request (for the provider's error message)

    @property
    def refused(self) -> bool:
        return self.fate in REFUSED

    def events(self) -> tuple[SimulatedEvent, ...]:
        return EVENTS_BY_FATE[self.fate]

    def as_json(self) -> dict[str, Any]:
        return {
            "email": self.email,
            "type": self.kind,
            "fate": str(self.fate),
            "status": self.status,
            "message_id": self.message_id,
            "reject_reason": self.reject_reason,
            "events": [str(event) for event in self.events()] if not self.refused else [],
        }


@dataclass
class ReceivedMessage:
    """One send request as the provider understood it."""

    provider: str
    endpoint: str = "send"
    sender: str | None = None
    subject: str | None = None
    recipients: list[ReceivedRecipient] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    template: str | None = None
    provider_message_id: str | None = None  # message-level id (Mailgun id, SendGrid X-Message-Id)
    domain: str | None = None  # Mailgun sender domain from the URL
    # The API key as sent; used for the key check, never stored in as_json() or logged.
    api_key: str | None = field(default=None, repr=False)
    # Provider-specific details the answer depends on (Mandrill's send mode); not exported.
    details: dict[str, Any] = field(default_factory=dict, repr=False)
    # Filled when stored:
    id: int = 0
    received_at: float = 0.0
    outcome: ReplyKind = ReplyKind.ACCEPTED
    status_code: int = 200
    fault: str | None = None

    def deliverable(self) -> list[ReceivedRecipient]:
        """Recipients the provider took, who therefore get tracking events."""
        return [recipient for recipient in self.recipients if not recipient.refused]

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "provider": self.provider,
            "endpoint": self.endpoint,
            "received_at": datetime.fromtimestamp(self.received_at, tz=UTC).isoformat(),
            "outcome": str(self.outcome),
            "status_code": self.status_code,
            "fault": self.fault,
            "from": self.sender,
            "subject": self.subject,
            "to": [r.email for r in self.recipients if r.kind == "to"],
            "cc": [r.email for r in self.recipients if r.kind == "cc"],
            "bcc": [r.email for r in self.recipients if r.kind == "bcc"],
            "recipients": [recipient.as_json() for recipient in self.recipients],
            "tags": list(self.tags),
            "metadata": dict(self.metadata),
            "template": self.template,
            "provider_message_id": self.provider_message_id,
            "domain": self.domain,
        }


class MessageStore:
    """The last `max_messages` records, oldest dropped first; thread-safe."""

    def __init__(self, max_messages: int, clock=time.time):
        self._records: deque[ReceivedMessage] = deque(maxlen=max_messages)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._clock = clock

    def add(self, message: ReceivedMessage) -> ReceivedMessage:
        with self._lock:
            message.id = next(self._ids)
            message.received_at = self._clock()
            self._records.append(message)
        return message

    def list(
        self,
        *,
        provider: str | None = None,
        recipient: str | None = None,
        outcome: str | None = None,
        limit: int | None = None,
    ) -> list[ReceivedMessage]:
        """Oldest first; `limit` keeps the newest N; `recipient` matches any of to/cc/bcc, any case."""
        with self._lock:
            records = list(self._records)
        if provider:
            records = [r for r in records if r.provider == provider]
        if outcome:
            records = [r for r in records if r.outcome == outcome]
        if recipient:
            wanted = recipient.strip().lower()
            records = [r for r in records if any(x.email.lower() == wanted for x in r.recipients)]
        if limit is not None and limit >= 0:
            records = records[-limit:] if limit else []
        return records

    def clear(self, provider: str | None = None) -> int:
        with self._lock:
            before = len(self._records)
            if provider:
                kept = [r for r in self._records if r.provider != provider]
                self._records.clear()
                self._records.extend(kept)
            else:
                self._records.clear()
            return before - len(self._records)

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)
