"""Project URLs: the gateway's JSON API under /api/, provider tracking webhooks under /anymail/,
the admin, and the send URL at /."""
from django.contrib import admin
from django.urls import URLPattern, URLResolver, include, path

from mailservice import conf
from mailservice.api import api
from mailservice.views import send

urlpatterns: list[URLPattern | URLResolver] = [
    path("api/", api.urls),
    path("anymail/", include("mailservice.webhooks")),
    # MAILSERVICE_ADMIN=0 removes the admin and its login (docs/security.md, "The admin").
    *([path("admin/", admin.site.urls)] if conf.admin_enabled() else []),
    path("", send, name="send"),
]
