"""smtest settings: everything comes from the environment (12-factor).

A `.env` file in the project root is read when present; `.env.example` documents every variable.
"""
import os
from pathlib import Path

import django
import environ

from failover import conf as failover_conf
from mailservice import conf as mailservice_conf
from smtest.environment import (
    anymail_settings,
    settings_from_environment,
    tasks_module,
    tasks_settings,
    with_sqlite_options,
)

BASE_DIR = Path(__file__).resolve().parent.parent
# Local state (the SQLite file, the file cache): the folder is in the repository, its contents are not.
VAR_DIR = BASE_DIR / "var"

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env")

DEBUG = env.bool("DEBUG", default=False)
# The default key is only fit for development and tests; `manage.py check --deploy` flags it.
SECRET_KEY = env.str("SECRET_KEY", default="django-insecure-smtest-development-key-change-me")
ALLOWED_HOSTS = env.list(
    "ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"] if DEBUG else []
)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "anymail",
    "ninja",
    # Locks the admin login after repeated failures (docs/security.md, "The admin").
    "axes",
    *(["django_tasks"] if tasks_module() == "django_tasks" else []),  # the Tasks API backport (Django 5.2)
    "django_tasks_db",
    "failover",
    "mailservice",
    # `manage.py sandbox` and the check that refuses the sandbox outside DEBUG (docs/sandbox.md).
    "sandbox",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # First after security: JSON errors and the body size limit for /api/ and the send URL.
    "mailservice.middleware.GatewayErrorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes requires: refuses a locked-out admin login.
    "axes.middleware.AxesMiddleware",
]

# django-axes first: it counts failed logins and refuses locked-out ones before Django checks
# the password. API keys are not Django logins and never pass through here.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_ENABLED = env.bool("AXES_ENABLED", default=True)
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
# Hours (a fraction for less: 0.25 is 15 minutes) until a lockout lifts by itself; 0: until
# `manage.py axes_reset`.
AXES_COOLOFF_TIME = env.float("AXES_COOLOFF_TIME", default=1.0) or None
# What is locked: `ip_address` (default), `username`, or a combination joined by "+"
# (`username+ip_address`); several comma-separated are each counted.
AXES_LOCKOUT_PARAMETERS = [
    item.split("+") if "+" in item else item
    for item in env.list("AXES_LOCKOUT_PARAMETERS", default=["ip_address"])
]
AXES_RESET_ON_SUCCESS = True  # a successful login clears the failures counted before it

ROOT_URLCONF = "smtest.urls"
WSGI_APPLICATION = "smtest.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
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

# HTTPS (docs/security.md, "Deployment settings"): with DEBUG off every default is the secure
# one, and `manage.py check --deploy --fail-level WARNING` passes. A plain-HTTP run with DEBUG off
# (a local trial) sets SECURE_SSL_REDIRECT=0 and SECURE_HSTS_SECONDS=0.
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=not DEBUG)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=not DEBUG)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
# Behind a proxy that terminates TLS: the header it sets and its value for HTTPS
# (`HTTP_X_FORWARDED_PROTO,https`). Only where the proxy always sets or strips that header.
SECURE_PROXY_SSL_HEADER = env.tuple("SECURE_PROXY_SSL_HEADER", default=None)

# Mail: every message goes through the failover backend, which tries the providers in order.
# Django 6.1 configures mail through MAILERS (EMAIL_BACKEND is deprecated there).
if django.VERSION >= (6, 1):
    MAILERS = {"default": {"BACKEND": "failover.backends.FirstWorkingEmailBackend"}}
else:
    EMAIL_BACKEND = "failover.backends.FirstWorkingEmailBackend"
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="smtest@localhost")
# The project's chain when FIRST_WORKING_EMAIL_BACKENDS is unset: Django's console backend, which
# prints messages (`make run` points the chain at the sandbox instead; docs/sandbox.md).
FIRST_WORKING_EMAIL_BACKENDS = ["django.core.mail.backends.console.EmailBackend"]
# The failover backend's and the gateway's own settings: those the environment sets. Their
# defaults live in failover/conf.py and mailservice/conf.py, which read them.
globals().update(settings_from_environment(os.environ, failover_conf.DEFAULTS))
globals().update(settings_from_environment(os.environ, mailservice_conf.DEFAULTS))
globals().update(mailservice_conf.django_request_limits(globals()))
ANYMAIL = anymail_settings(os.environ)

# Background delivery (Django's Tasks API): `database` (default; run `manage.py db_worker`),
# `immediate` (sends inside the request, for tests and demos), or `dummy` (enqueue nothing).
TASKS = tasks_settings(env.str("TASKS_BACKEND", default="database"))

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # API keys are masked in whatever is logged, whoever logs it (docs/security.md, "Secrets").
    "filters": {"mask_api_keys": {"()": "mailservice.logfilters.MaskApiKeys"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        # Django's own, for the development server's request lines.
        "django.server": {"()": "django.utils.log.ServerFormatter", "format": "[{server_time}] {message}", "style": "{"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["mask_api_keys"]},
        "django.server": {"class": "logging.StreamHandler", "formatter": "django.server", "filters": ["mask_api_keys"]},
    },
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "failover": {"level": LOG_LEVEL},
        "mailservice": {"level": LOG_LEVEL},
        "smtest": {"level": LOG_LEVEL},
        # Django's defaults for these two write through handlers of their own, which would not
        # mask keys: "django" goes to the root's console instead (one line each, also with DEBUG
        # on), the development server's request lines to the same output as before, masked.
        "django": {"handlers": [], "level": "INFO"},
        "django.server": {"handlers": ["django.server"], "level": "INFO", "propagate": False},
    },
}
