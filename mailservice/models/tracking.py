"""What providers report after sending (tracking events) and who must not be mailed again."""

from django.db import models
from django.utils import timezone


class TrackingEvent(models.Model):
    """One provider event (delivered, bounced, opened...), stored once per provider event id."""

    provider = models.CharField(max_length=100)
    event_id = models.CharField(max_length=255)  # the provider's id, or a hash of the raw event
    event_type = models.CharField(max_length=50)
    timestamp = models.DateTimeField(null=True, blank=True)
    recipient = models.CharField(max_length=320, blank=True, default="", db_index=True)
    provider_message_id = models.CharField(max_length=255, blank=True, default="", db_index=True)
    message = models.ForeignKey(
        "mailservice.Message", null=True, blank=True, on_delete=models.SET_NULL, related_name="events"
    )
    message_recipient = models.ForeignKey(
        "mailservice.Recipient", null=True, blank=True, on_delete=models.SET_NULL, related_name="events"
    )
    description = models.TextField(blank=True, default="")
    mta_response = models.TextField(blank=True, default="")
    raw = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["provider", "event_id"], name="mailservice_event_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.provider} {self.event_type} {self.recipient}"


class Suppression(models.Model):
    """An address no provider may be asked to mail: it bounced, complained or unsubscribed."""

    class Reason(models.TextChoices):
        BOUNCED = "bounced"
        COMPLAINED = "complained"
        UNSUBSCRIBED = "unsubscribed"
        MANUAL = "manual"

    address = models.CharField(max_length=320, unique=True)  # normalized: see addresses.normalize_email
    reason = models.CharField(max_length=20, choices=Reason.choices, default=Reason.MANUAL)
    provider = models.CharField(max_length=100, blank=True, default="")
    event = models.ForeignKey(TrackingEvent, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.address} ({self.reason})"
