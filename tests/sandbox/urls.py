"""Anymail's webhook views at /anymail/, as issue 4 mounts them in smtest/urls.py."""
from django.urls import include, path

urlpatterns = [path("anymail/", include("anymail.urls"))]
