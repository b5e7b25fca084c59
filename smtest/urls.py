"""Project URLs: the gateway's JSON API under /api/, provider tracking webhooks under /anymail/,
the admin, and the send URL at /."""
from django.contrib import admin
from django.urls import URLPattern, URLResolver, include, path

from mailservice.api import api
from mailservice.views import send

urlpatterns: list[URLPattern | URLResolver] = [
    path("api/", api.urls),
    path("anymail/", include("mailservice.webhooks")),
    path("admin/", admin.site.urls),
    path("", send, name="send"),
]
