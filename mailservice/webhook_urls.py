"""The URLs under /anymail/ (app name "anymail", as Anymail's own): a view for every tracking
endpoint Anymail has, each answering only while its ESP is in use (webhook_providers.py), then a
JSON 404 for any other path. Inbound mail is not ours."""

from __future__ import annotations

from django.urls import URLPattern, re_path

from mailservice.anymail_adapter import tracking_patterns
from mailservice.webhooks import not_found, tracking_view


def tracking_urlpatterns() -> list[URLPattern]:
    """Anymail's tracking patterns, same routes and names, each with its view wrapped."""
    patterns = [
        URLPattern(pattern.pattern, tracking_view(pattern.callback), pattern.default_args, pattern.name)
        for pattern in tracking_patterns()
    ]
    patterns.append(re_path(r"", not_found, name="not_found"))
    return patterns


urlpatterns = tracking_urlpatterns()
app_name = "anymail"
