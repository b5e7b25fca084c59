"""Project URLs: the gateway's JSON API under /api/, provider tracking webhooks under /anymail/,
the admin, the probes (/healthz, /readyz, /metrics), and the send URL at /."""

from django.contrib import admin
from django.urls import URLPattern, URLResolver, include, path

from mailservice import conf, health
from mailservice.api import api
from mailservice.views import send

urlpatterns: list[URLPattern | URLResolver] = [
    path("api/", api.urls),
    path("anymail/", include("mailservice.webhook_urls")),
    # Load balancers and Prometheus, over plain HTTP too (docs/monitoring.md).
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", health.metrics_view, name="metrics"),
    # MAILSERVICE_ADMIN=0 removes the admin and its login (docs/security.md, "The admin").
    *([path("admin/", admin.site.urls)] if conf.admin_enabled() else []),
    path("", send, name="send"),
]
