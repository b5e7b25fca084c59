"""smtest settings: everything comes from the environment (12-factor).

A `.env` file in the project root is read when present; `.env.example` documents every variable.
"""
import os
import sys
from pathlib import Path

import django
import environ

from smtest.environment import anymail_settings, split_list, tasks_module, tasks_settings, with_sqlite_options

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
    "django.contrib.admin",
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "anymail",
    "ninja",
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
]

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
# Tests use a file, not SQLite's shared in-memory database, so threads (the concurrency tests)
# get real locking with the busy timeout above, and the end-to-end tests' worker process can
# open it; one file per test run, so two suites (two interpreters, two checkouts) never collide.
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    DATABASES["default"].setdefault(
        "TEST", {"NAME": str(VAR_DIR / f"test-py{sys.version_info[0]}{sys.version_info[1]}-{os.getpid()}.sqlite3")}
    )
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

# Background delivery (Django's Tasks API): `database` (default; run `manage.py db_worker`),
# `immediate` (sends inside the request, for tests and demos), or `dummy` (enqueue nothing).
TASKS = tasks_settings(env.str("TASKS_BACKEND", default="database"))

# The gateway (mailservice/conf.py documents each default; docs/delivery.md explains them).
MAILSERVICE_MAX_REQUEST_BYTES = env.int("MAILSERVICE_MAX_REQUEST_BYTES", default=30 * 1024 * 1024)
MAILSERVICE_MAX_ATTACHMENTS_BYTES = env.int("MAILSERVICE_MAX_ATTACHMENTS_BYTES", default=25 * 1024 * 1024)
MAILSERVICE_MAX_RECIPIENTS = env.int("MAILSERVICE_MAX_RECIPIENTS", default=1000)
MAILSERVICE_RETRY_BASE_DELAY = env.float("MAILSERVICE_RETRY_BASE_DELAY", default=30.0)
MAILSERVICE_RETRY_MAX_DELAY = env.float("MAILSERVICE_RETRY_MAX_DELAY", default=3600.0)
MAILSERVICE_RETRY_JITTER = env.float("MAILSERVICE_RETRY_JITTER", default=0.2)
MAILSERVICE_MAX_AGE = env.float("MAILSERVICE_MAX_AGE", default=2 * 86400.0)
MAILSERVICE_LEASE_SECONDS = env.float("MAILSERVICE_LEASE_SECONDS", default=300.0)
MAILSERVICE_RECOVERY_GRACE = env.float("MAILSERVICE_RECOVERY_GRACE", default=120.0)
MAILSERVICE_RECOVERY_INTERVAL = env.float("MAILSERVICE_RECOVERY_INTERVAL", default=30.0)
MAILSERVICE_RECOVERY_BATCH = env.int("MAILSERVICE_RECOVERY_BATCH", default=500)
MAILSERVICE_IDEMPOTENCY_TTL = env.float("MAILSERVICE_IDEMPOTENCY_TTL", default=86400.0)
MAILSERVICE_API_KEY_TOUCH_INTERVAL = env.float("MAILSERVICE_API_KEY_TOUCH_INTERVAL", default=60.0)
MAILSERVICE_SEND_URL_SUBJECT = env.str("MAILSERVICE_SEND_URL_SUBJECT", default="Test message from smtest")
MAILSERVICE_SEND_URL_TEXT = env.str(
    "MAILSERVICE_SEND_URL_TEXT", default="This is a test message sent through the smtest gateway."
)
MAILSERVICE_WEBHOOK_MAX_AGE = env.float("MAILSERVICE_WEBHOOK_MAX_AGE", default=0.0)
# Django reads request bodies up to this size; the gateway's own limit answers 413 before that.
DATA_UPLOAD_MAX_MEMORY_SIZE = MAILSERVICE_MAX_REQUEST_BYTES
# A form post to the send URL may list up to MAILSERVICE_MAX_RECIPIENTS addresses.
DATA_UPLOAD_MAX_NUMBER_FIELDS = MAILSERVICE_MAX_RECIPIENTS * 3 + 100

# `manage.py test` runs the system checks with DEBUG off (as Django's test runner does), where
# the webhook-secret check would stop every run; the tests set the secrets they need.
if sys.argv[1:2] == ["test"]:
    SILENCED_SYSTEM_CHECKS = ["mailservice.E101"]

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "failover": {"level": LOG_LEVEL},
        "mailservice": {"level": LOG_LEVEL},
        "smtest": {"level": LOG_LEVEL},
    },
}
