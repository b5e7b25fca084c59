"""Project URLs: the gateway's JSON API under /api/, the send URL at /, the admin."""
from django.contrib import admin
from django.urls import URLPattern, URLResolver, path

from mailservice.api import api
from mailservice.views import send

urlpatterns: list[URLPattern | URLResolver] = [
    path("api/", api.urls),
    path("admin/", admin.site.urls),
    path("", send, name="send"),
]
