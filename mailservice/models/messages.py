"""The outbox: a Message row is the source of truth for delivery, whatever the task queue does."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from django.db import models
from django.db.models import Q
from django.utils import timezone

from failover.attempts import Outcome
from mailservice import conf
from mailservice.statuses import MessageStatus, RecipientStatus

READY_STATUSES = [MessageStatus.QUEUED, MessageStatus.DEFERRED]


def _due(now: datetime) -> Q:
    """Waiting for a worker and due: queued, or deferred whose retry time has come."""
    return Q(status__in=READY_STATUSES, next_attempt_at__lte=now)


def _lease_expired(now: datetime) -> Q:
    """Claimed by a worker that did not finish in time: it died, or hangs."""
    return Q(status=MessageStatus.SENDING, lease_expires_at__lte=now)


class MessageQuerySet(models.QuerySet["Message"]):
    def claimable(self, now: datetime) -> MessageQuerySet:
        return self.filter(_due(now) | _lease_expired(now))

    def needs_recovery(self, now: datetime, grace: float) -> MessageQuerySet:
        """Claimable for longer than `grace` with no delivery task enqueued in that time: the
        task was lost, or its worker died. Recovery enqueues a new one."""
        cutoff = now - timedelta(seconds=grace)
        return self.filter(_due(cutoff) | _lease_expired(now)).filter(
            Q(enqueued_at__isnull=True) | Q(enqueued_at__lte=cutoff)
        )


class Message(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    api_key = models.ForeignKey(
        "mailservice.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="messages"
    )
    status = models.CharField(max_length=32, choices=MessageStatus.choices, default=MessageStatus.QUEUED)

    # What to send, as accepted (validated) from the API.
    from_email = models.CharField(max_length=998)
    reply_to = models.JSONField(default=list, blank=True)
    subject = models.TextField(blank=True, default="")
    text = models.TextField(null=True, blank=True)
    html = models.TextField(null=True, blank=True)
    headers = models.JSONField(default=dict, blank=True)
    # [{"filename", "content" (base64), "mimetype", "inline", "content_id"}]
    attachments = models.JSONField(default=list, blank=True)
    tags = models.JSONField(default=list, blank=True)
    metadata = models.JSONField(null=True, blank=True)
    # An ESP's stored template, as given: one id (a one-provider chain), or {provider: id}, which
    # sends the message only to those providers, each with its own id (docs/templates.md).
    template_id = models.JSONField(null=True, blank=True)
    # The gateway's stored template the parts above were rendered from when the message was
    # accepted: {"name", "language", "version"}; None for a message given its own content.
    template = models.JSONField(null=True, blank=True)
    merge_data = models.JSONField(null=True, blank=True)
    merge_global_data = models.JSONField(null=True, blank=True)
    send_at = models.DateTimeField(null=True, blank=True)

    # Delivery is tried until MAILSERVICE_MAX_AGE after this: acceptance, send_at, or a retry.
    window_start = models.DateTimeField(default=timezone.now)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(default=timezone.now)

    # Delivery bookkeeping: only the worker, recovery and operator actions write these.
    next_attempt_at = models.DateTimeField(null=True, blank=True)  # None once nothing is pending
    enqueued_at = models.DateTimeField(null=True, blank=True)  # last delivery task enqueued
    lease_owner = models.CharField(max_length=64, blank=True, default="")
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    # Set when the worker handed the message to its senders this round; a lease that expires
    # with this set may have been sent (flagged possible_duplicate), one without it was not.
    send_started_at = models.DateTimeField(null=True, blank=True)
    attempt_count = models.PositiveIntegerField(default=0)  # delivery rounds started
    provider = models.CharField(max_length=100, blank=True, default="")
    provider_message_id = models.CharField(max_length=255, blank=True, default="", db_index=True)
    possible_duplicate = models.BooleanField(default=False)
    last_error = models.TextField(blank=True, default="")
    sent_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = MessageQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # The worker's and recovery's queries: partial, so they stay small as mail piles up.
            models.Index(
                fields=["next_attempt_at"],
                name="mailservice_msg_ready_idx",
                condition=Q(status__in=["queued", "deferred"]),
            ),
            models.Index(
                fields=["lease_expires_at"],
                name="mailservice_msg_leased_idx",
                condition=Q(status="sending"),
            ),
            models.Index(fields=["status", "created_at"], name="mailservice_msg_status_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.id} ({self.status})"

    def deadline(self) -> datetime:
        """After this, a message no provider took fails instead of waiting for another retry."""
        return self.window_start + timedelta(seconds=conf.max_age())


class Recipient(models.Model):
    class Kind(models.TextChoices):
        TO = "to"
        CC = "cc"
        BCC = "bcc"

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="recipients")
    kind = models.CharField(max_length=3, choices=Kind.choices)
    position = models.PositiveIntegerField(default=0)
    address = models.CharField(max_length=998)  # as given, display name included
    email = models.CharField(max_length=320, db_index=True)  # normalized addr-spec
    status = models.CharField(max_length=32, choices=RecipientStatus.choices, default=RecipientStatus.QUEUED)
    provider_message_id = models.CharField(max_length=255, blank=True, default="", db_index=True)
    error = models.TextField(blank=True, default="")
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["message", "kind", "position"]

    def __str__(self) -> str:
        return f"{self.email} ({self.status})"


class DeliveryAttempt(models.Model):
    """One provider tried with one message in one delivery round, as the failover backend saw it."""

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="attempts")
    round = models.PositiveIntegerField()
    provider = models.CharField(max_length=100, blank=True, default="")
    outcome = models.CharField(max_length=32, choices=Outcome.choices)
    error_class = models.CharField(max_length=255, blank=True, default="")
    error = models.TextField(blank=True, default="")
    status_code = models.PositiveIntegerField(null=True, blank=True)
    duration = models.FloatField(default=0.0)  # seconds
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["message", "id"]

    def __str__(self) -> str:
        return f"{self.provider or '-'}: {self.outcome}"

    @property
    def ambiguous(self) -> bool:
        return self.outcome == Outcome.AMBIGUOUS
