"""Anymail's own webhook views at /anymail/, where the project mounts its wrapped ones
(docs/webhooks.md): these tests check the sandbox's posts against Anymail itself."""

from django.urls import include, path

urlpatterns = [path("anymail/", include("anymail.urls"))]
