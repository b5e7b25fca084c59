"""The gateway's tables: the outbox (Message and its Recipients and DeliveryAttempts), tracking
events, the suppression list, API keys and idempotency keys."""

from mailservice.models.keys import ApiKey, IdempotencyKey
from mailservice.models.messages import DeliveryAttempt, Message, MessageQuerySet, Recipient
from mailservice.models.tracking import Suppression, TrackingEvent

__all__ = [
    "ApiKey",
    "DeliveryAttempt",
    "IdempotencyKey",
    "Message",
    "MessageQuerySet",
    "Recipient",
    "Suppression",
    "TrackingEvent",
]
