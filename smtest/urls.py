"""Project URLs. The gateway's API and the provider webhooks are mounted here as they arrive."""
from django.urls import URLPattern, URLResolver

urlpatterns: list[URLPattern | URLResolver] = []
