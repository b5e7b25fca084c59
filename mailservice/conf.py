"""The one place that reads the gateway's settings, each with its documented default.

Values are read when used, never at import, so `override_settings` works. docs/delivery.md and
.env.example describe each one; smtest/settings.py sets those the environment gives.
"""

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

MB = 1024 * 1024
T = TypeVar("T")

DEFAULTS: dict[str, Any] = {
    # Limits of one submitted message (docs/delivery.md, "Settings"; docs/api.md, "Errors").
    "MAILSERVICE_MAX_REQUEST_BYTES": 30 * MB,  # whole request body -> 413
    "MAILSERVICE_MAX_ATTACHMENTS_BYTES": 25 * MB,  # decoded attachments, all together -> 413
    "MAILSERVICE_MAX_RECIPIENTS": 1000,  # to + cc + bcc -> 422 on `to`
    # Free-form JSON fields, each on its own: its size as compact UTF-8 JSON, and its keys and
    # list items at every level (docs/security.md, "Input limits"). Metadata follows the
    # tightest provider (SendGrid's 10,000 bytes of custom args); merge and template data feed
    # templates and may be larger. Over a limit -> 422 on the field.
    "MAILSERVICE_MAX_METADATA_BYTES": 10_000,
    "MAILSERVICE_MAX_METADATA_KEYS": 100,
    "MAILSERVICE_MAX_MERGE_DATA_BYTES": 2 * MB,  # merge_data, merge_global_data, template_data
    "MAILSERVICE_MAX_MERGE_DATA_KEYS": 20_000,
    # How far ahead `send_at` may lie (days; 0 = up to the year 9998): a scheduled message
    # holds its body in the database until then -> 422 on `send_at`.
    "MAILSERVICE_MAX_SCHEDULE_DAYS": 30,
    # Stored templates (docs/templates.md, "Limits"): each source (subject, text, html) as UTF-8,
    # checked when it is saved; each rendered part as UTF-8, and the time one template's parts
    # take to render together, both checked while rendering, so a loop over a loop stops there.
    "MAILSERVICE_TEMPLATE_MAX_BYTES": 512 * 1024,
    "MAILSERVICE_TEMPLATE_RENDER_MAX_BYTES": 1 * MB,
    "MAILSERVICE_TEMPLATE_RENDER_SECONDS": 2.0,
    # Retry policy for messages that no provider took (AllProvidersFailed).
    "MAILSERVICE_RETRY_BASE_DELAY": 30.0,  # seconds before the first retry
    "MAILSERVICE_RETRY_MAX_DELAY": 3600.0,  # the backoff never waits longer than this
    "MAILSERVICE_RETRY_JITTER": 0.2,  # each delay is shortened by a random share up to this
    "MAILSERVICE_MAX_AGE": 2 * 86400.0,  # seconds after which an undelivered message fails
    # The longest a delivery round runs: no send starts after half of it (RQ's job timeout is
    # twice this). Longer than the slowest send through every provider (timeouts x chain).
    "MAILSERVICE_LEASE_SECONDS": 300.0,
    # A worker renews the leases of the messages it holds this often; a worker that stops
    # renewing (it died) loses them after six periods, to be taken over (docs/delivery.md).
    "MAILSERVICE_LEASE_RENEW_SECONDS": 5.0,
    # Delivery rounds: messages one worker claims and records together, and sends a worker
    # process has in flight at once, each on its own connection (docs/delivery.md).
    "MAILSERVICE_BATCH_SIZE": 250,
    "MAILSERVICE_SEND_CONCURRENCY": 32,  # the ceiling: the number in flight adapts below it
    # Recovery: a due message with no delivery enqueued for this long gets a new task.
    "MAILSERVICE_RECOVERY_GRACE": 120.0,
    "MAILSERVICE_RECOVERY_INTERVAL": 30.0,  # seconds between passes of `recover_messages --loop`
    "MAILSERVICE_RECOVERY_BATCH": 500,  # messages re-enqueued per pass at most
    # Idempotency keys are remembered this long (seconds), then the key may be reused.
    "MAILSERVICE_IDEMPOTENCY_TTL": 86400.0,
    # The send URL's defaults for `GET /?to=addr` (the proof of concept's test message).
    "MAILSERVICE_SEND_URL_SUBJECT": "Test message from smtest",
    "MAILSERVICE_SEND_URL_TEXT": "This is a test message sent through the smtest gateway.",
    # Tracking webhooks: refuse posts whose signed timestamp is older than this (0 = off, since
    # providers retry failed posts for hours; docs/webhooks.md).
    "MAILSERVICE_WEBHOOK_MAX_AGE": 0.0,
    # `last_used_at` of an API key is written at most once per this many seconds.
    "MAILSERVICE_API_KEY_TOUCH_INTERVAL": 60.0,
    # Tracking endpoints exist for the providers in FIRST_WORKING_EMAIL_BACKENDS and these
    # (ESP names, e.g. a provider being phased out whose late events still arrive).
    "MAILSERVICE_WEBHOOK_PROVIDERS": [],
    # Requests per API key and period ("600/m"; s, m, h, d), shared across processes through the
    # cache; "0" turns the limit off (docs/security.md).
    "MAILSERVICE_API_RATE_LIMIT": "600/m",
    # False removes the Django admin (its URLs) altogether.
    "MAILSERVICE_ADMIN": True,
    # Bearer token GET /metrics requires. Without one, /metrics answers only with DEBUG on or
    # when MAILSERVICE_METRICS_PUBLIC says it is meant to be open (docs/monitoring.md).
    "MAILSERVICE_METRICS_TOKEN": "",
    "MAILSERVICE_METRICS_PUBLIC": False,
}


def django_request_limits(configured: Mapping[str, Any]) -> dict[str, int]:
    """Django's own request limits, kept in step with the gateway's (for settings.py, before
    settings exist): Django reads bodies up to the size the gateway's own check answers 413 to,
    and a form post to the send URL may list every recipient allowed."""
    size = int(configured.get("MAILSERVICE_MAX_REQUEST_BYTES", DEFAULTS["MAILSERVICE_MAX_REQUEST_BYTES"]))
    recipients = int(configured.get("MAILSERVICE_MAX_RECIPIENTS", DEFAULTS["MAILSERVICE_MAX_RECIPIENTS"]))
    return {"DATA_UPLOAD_MAX_MEMORY_SIZE": size, "DATA_UPLOAD_MAX_NUMBER_FIELDS": recipients * 3 + 100}


def get_setting(name: str) -> Any:
    """The setting's value, or its documented default; the error names the setting to fix."""
    if name not in DEFAULTS:
        raise ImproperlyConfigured(f"Unknown gateway setting {name!r}")
    value = getattr(settings, name, DEFAULTS[name])
    default = DEFAULTS[name]
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        try:
            value = type(default)(value)
        except (TypeError, ValueError) as err:
            raise ImproperlyConfigured(f"settings.{name} must be a number, not {value!r}") from err
        if value < 0:
            raise ImproperlyConfigured(f"settings.{name} must not be negative, not {value!r}")
    return value


def _reader(name: str, kind: Callable[[Any], T]) -> Callable[[], T]:
    """The accessor of one setting that needs no more than its type: read when called, so
    `override_settings` works."""

    def read() -> T:
        return kind(get_setting(name))

    read.__doc__ = f"settings.{name}, or its default."
    return read


max_request_bytes = _reader("MAILSERVICE_MAX_REQUEST_BYTES", int)
max_attachments_bytes = _reader("MAILSERVICE_MAX_ATTACHMENTS_BYTES", int)
max_recipients = _reader("MAILSERVICE_MAX_RECIPIENTS", int)
max_metadata_bytes = _reader("MAILSERVICE_MAX_METADATA_BYTES", int)
max_metadata_keys = _reader("MAILSERVICE_MAX_METADATA_KEYS", int)
max_merge_data_bytes = _reader("MAILSERVICE_MAX_MERGE_DATA_BYTES", int)
max_merge_data_keys = _reader("MAILSERVICE_MAX_MERGE_DATA_KEYS", int)
max_schedule_days = _reader("MAILSERVICE_MAX_SCHEDULE_DAYS", float)  # 0 turns the horizon off
template_max_bytes = _reader("MAILSERVICE_TEMPLATE_MAX_BYTES", int)
template_render_max_bytes = _reader("MAILSERVICE_TEMPLATE_RENDER_MAX_BYTES", int)
template_render_seconds = _reader("MAILSERVICE_TEMPLATE_RENDER_SECONDS", float)
retry_base_delay = _reader("MAILSERVICE_RETRY_BASE_DELAY", float)
retry_max_delay = _reader("MAILSERVICE_RETRY_MAX_DELAY", float)
max_age = _reader("MAILSERVICE_MAX_AGE", float)
lease_seconds = _reader("MAILSERVICE_LEASE_SECONDS", float)
recovery_grace = _reader("MAILSERVICE_RECOVERY_GRACE", float)
recovery_interval = _reader("MAILSERVICE_RECOVERY_INTERVAL", float)
recovery_batch = _reader("MAILSERVICE_RECOVERY_BATCH", int)
idempotency_ttl = _reader("MAILSERVICE_IDEMPOTENCY_TTL", float)
send_url_subject = _reader("MAILSERVICE_SEND_URL_SUBJECT", str)
send_url_text = _reader("MAILSERVICE_SEND_URL_TEXT", str)
api_key_touch_interval = _reader("MAILSERVICE_API_KEY_TOUCH_INTERVAL", float)
webhook_max_age = _reader("MAILSERVICE_WEBHOOK_MAX_AGE", float)
admin_enabled = _reader("MAILSERVICE_ADMIN", bool)
metrics_public = _reader("MAILSERVICE_METRICS_PUBLIC", bool)


def retry_jitter() -> float:
    return min(get_setting("MAILSERVICE_RETRY_JITTER"), 1.0)


def lease_renew_seconds() -> float:
    return max(float(get_setting("MAILSERVICE_LEASE_RENEW_SECONDS")), 0.1)


def lease_hold_seconds() -> float:
    """How long a claimed message stays with its worker without a renewal: six renewal
    periods, so a worker whose database answers slowly for a while (a lock wait, a restart)
    keeps what it holds."""
    return min(6 * lease_renew_seconds(), lease_seconds())


def database_patience() -> float:
    """How long a worker waits for a database that is restarting before a round gives up:
    half the hold, so the leases outlive the wait."""
    return lease_hold_seconds() / 2


def batch_size() -> int:
    return max(get_setting("MAILSERVICE_BATCH_SIZE"), 1)


def send_concurrency() -> int:
    return max(get_setting("MAILSERVICE_SEND_CONCURRENCY"), 1)


def webhook_providers() -> list[str]:
    value = get_setting("MAILSERVICE_WEBHOOK_PROVIDERS") or []
    if isinstance(value, str):
        value = value.split(",")
    return [str(name).strip() for name in value if str(name).strip()]


def api_rate_limit() -> str:
    return str(get_setting("MAILSERVICE_API_RATE_LIMIT")).strip()


def metrics_token() -> str:
    return str(get_setting("MAILSERVICE_METRICS_TOKEN") or "").strip()


def default_from_email() -> str:
    return settings.DEFAULT_FROM_EMAIL
