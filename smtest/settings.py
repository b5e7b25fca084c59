"""smtest settings: everything comes from the environment (12-factor).

A `.env` file in the project root is read when present; `.env.example` documents every variable.
"""
import os
from pathlib import Path

import django
import environ

from smtest.environment import anymail_settings, split_list, with_sqlite_options

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"
VAR_DIR.mkdir(exist_ok=True)

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env")

DEBUG = env.bool("DEBUG", default=False)
# The default key is only fit for development and tests; `manage.py check --deploy` flags it.
SECRET_KEY = env.str("SECRET_KEY", default="django-insecure-smtest-development-key-change-me")
ALLOWED_HOSTS = env.list(
    "ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"] if DEBUG else []
)

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.staticfiles",
    "anymail",
    "failover",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
]

ROOT_URLCONF = "smtest.urls"
WSGI_APPLICATION = "smtest.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]

DATABASES = {
    "default": with_sqlite_options(
        env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'smtest.sqlite3'}")
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Web and worker processes must share the failover memory, so the default cache is one that
# every local process sees (files under var/); use Redis in production.
CACHES = {"default": env.cache_url("CACHE_URL", default=f"filecache://{VAR_DIR / 'cache'}")}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"

# Mail: every message goes through the failover backend, which tries the providers in order.
# Django 6.1 configures mail through MAILERS (EMAIL_BACKEND is deprecated there).
if django.VERSION >= (6, 1):
    MAILERS = {"default": {"BACKEND": "failover.backends.FirstWorkingEmailBackend"}}
else:
    EMAIL_BACKEND = "failover.backends.FirstWorkingEmailBackend"
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="smtest@localhost")
FIRST_WORKING_EMAIL_BACKENDS = split_list(
    env.str("FIRST_WORKING_EMAIL_BACKENDS", default="django.core.mail.backends.console.EmailBackend")
)
FIRST_WORKING_EMAIL_CACHE_TIMEOUT = env.int("FIRST_WORKING_EMAIL_CACHE_TIMEOUT", default=3600)
FIRST_WORKING_EMAIL_CONNECT_TIMEOUT = env.float("FIRST_WORKING_EMAIL_CONNECT_TIMEOUT", default=3.05)
FIRST_WORKING_EMAIL_READ_TIMEOUT = env.float("FIRST_WORKING_EMAIL_READ_TIMEOUT", default=15.0)
FIRST_WORKING_EMAIL_FAILOVER_ON_AMBIGUOUS = env.bool(
    "FIRST_WORKING_EMAIL_FAILOVER_ON_AMBIGUOUS", default=True
)
ANYMAIL = anymail_settings(os.environ)

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "failover": {"level": LOG_LEVEL},
        "smtest": {"level": LOG_LEVEL},
    },
}
