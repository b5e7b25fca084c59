"""Messages as the API shows them: what happened, never the body or the attachments."""
from __future__ import annotations

from django.http import HttpRequest

from mailservice.api.submit import message_url
from mailservice.models import Message, Recipient


def _addresses(message: Message, kind: str) -> list[str]:
    return [r.address for r in message.recipients.all() if r.kind == kind]


def message_summary(request: HttpRequest, message: Message) -> dict:
    return {
        "id": str(message.pk),
        "url": message_url(request, message),
        "status": message.status,
        "from": message.from_email,
        "subject": message.subject,
        "to": _addresses(message, Recipient.Kind.TO),
        "provider": message.provider,
        "provider_message_id": message.provider_message_id,
        "created_at": message.created_at,
        "send_at": message.send_at,
    }


def message_detail(request: HttpRequest, message: Message) -> dict:
    return {
        **message_summary(request, message),
        "cc": _addresses(message, Recipient.Kind.CC),
        "bcc": _addresses(message, Recipient.Kind.BCC),
        "tags": list(message.tags or []),
        "metadata": message.metadata,
        "attempt_count": message.attempt_count,
        "next_attempt_at": message.next_attempt_at,
        "possible_duplicate": message.possible_duplicate,
        "last_error": message.last_error,
        "sent_at": message.sent_at,
        "finished_at": message.finished_at,
        "recipients": [
            {
                "address": r.address,
                "email": r.email,
                "kind": r.kind,
                "status": r.status,
                "provider_message_id": r.provider_message_id,
                "error": r.error,
            }
            for r in message.recipients.all()
        ],
        "attempts": [
            {
                "round": a.round,
                "provider": a.provider,
                "outcome": a.outcome,
                "ambiguous": a.ambiguous,
                "error_class": a.error_class,
                "error": a.error,
                "status_code": a.status_code,
                "duration": a.duration,
                "created_at": a.created_at,
            }
            for a in message.attempts.all()
        ],
        "events": [
            {
                "provider": e.provider,
                "event_id": e.event_id,
                "event_type": e.event_type,
                "timestamp": e.timestamp,
                "recipient": e.recipient,
                "description": e.description,
            }
            for e in message.events.all()
        ],
    }
