"""API keys (only a hash is stored) and the idempotency keys requests carry."""

from __future__ import annotations

from datetime import datetime

from django.db import models
from django.db.models import Q
from django.utils import timezone

# What a key may do (docs/api.md, "Authentication"): `send` posts messages (the API and the send
# URL), `read` reads the messages this key sent, `manage` reads every message and manages the
# suppression list and the providers.
SCOPES = ("send", "read", "manage")
DEFAULT_SCOPES = ("send", "read")


class ApiKeyQuerySet(models.QuerySet["ApiKey"]):
    def active(self, now: datetime | None = None) -> ApiKeyQuerySet:
        """Keys that authenticate at `now`: not revoked, and not past the end of a rotation's grace."""
        now = now or timezone.now()
        return self.filter(revoked_at__isnull=True).filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))


class ApiKey(models.Model):
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, db_index=True)  # shown to tell keys apart; not secret
    key_hash = models.CharField(max_length=64, unique=True)  # sha256 of the whole key
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # Set when the key is rotated (`create_api_key NAME --rotate --grace 24h`): the key keeps
    # working until then, so its clients can move to the new key without downtime.
    expires_at = models.DateTimeField(null=True, blank=True)
    # Comma-separated, in the order of SCOPES ("send,read"); set by services.keys.api_key_create.
    scopes = models.CharField(max_length=100, default=",".join(DEFAULT_SCOPES))
    # Comma-separated sender domains, lowercased and in ASCII (punycode) form; empty: any sender.
    from_domains = models.TextField(blank=True, default="")

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        ordering = ["name", "-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > timezone.now())

    @property
    def scope_set(self) -> frozenset[str]:
        return frozenset(scope for scope in self.scopes.split(",") if scope)

    def has_scope(self, scope: str) -> bool:
        return scope in self.scope_set

    @property
    def from_domain_list(self) -> list[str]:
        return [domain for domain in self.from_domains.split(",") if domain]


class IdempotencyKey(models.Model):
    """An Idempotency-Key seen with one API key: a retry with the same body gets `message` back."""

    api_key = models.ForeignKey(ApiKey, on_delete=models.CASCADE, related_name="idempotency_keys")
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)  # sha256 of the canonical parsed body
    message = models.ForeignKey("mailservice.Message", on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["api_key", "key"], name="mailservice_idempotency_unique"),
        ]

    def __str__(self) -> str:
        return self.key
