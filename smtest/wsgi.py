"""WSGI entry point (gunicorn smtest.wsgi)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "smtest.settings")

application = get_wsgi_application()
