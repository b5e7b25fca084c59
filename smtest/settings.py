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
    cache_settings,
    database_settings,
    log_format,
    logging_config,
    masked_handler,
    rq_queues,
    secret_key,
    settings_from_environment,
    split_list,
    tasks_backend_name,
    tasks_module,
    tasks_settings,
    trusted_proxies,
)

BASE_DIR = Path(__file__).resolve().parent.parent
# Local state (the SQLite file, the file cache): the folder is in the repository, its contents are not.
VAR_DIR = BASE_DIR / "var"

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env")

DEBUG = env.bool("DEBUG", default=False)
# Required with DEBUG off (startup stops naming it); with DEBUG on a development key stands in.
SECRET_KEY = secret_key(env.str("SECRET_KEY", default=""), debug=DEBUG)
# Previous keys, comma-separated, still accepted for what they signed (admin logins,
# password-reset links, signed cookies) while a new SECRET_KEY takes over (docs/deployment.md,
# "Rotation without downtime").
SECRET_KEY_FALLBACKS = split_list(env.str("SECRET_KEY_FALLBACKS", default=""))
ALLOWED_HOSTS = env.list(
    "ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"] if DEBUG else []
)
# The delivery queue (Django's Tasks API, set up below): checked here, since `rq` adds an app.
TASKS_BACKEND = tasks_backend_name(env.str("TASKS_BACKEND", default="database"))

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
    # TASKS_BACKEND=rq: django-rq's queues and `manage.py rqworker` (docs/deployment.md).
    *(["django_rq"] if TASKS_BACKEND == "rq" else []),
    "failover",
    "mailservice",
    # `manage.py sandbox` and the check that refuses the sandbox outside DEBUG (docs/sandbox.md).
    "sandbox",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files (the admin's, the API docs') with DEBUG off, from STATIC_ROOT, before any
    # other work on the request (docs/deployment.md, "Static files").
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Next: JSON errors and the body size limit for /api/ and the send URL.
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
# What is locked, each counted on its own: by default an account (whatever address tries it)
# and a client address (whatever account it tries); `username+ip_address` joins two into one count.
AXES_LOCKOUT_PARAMETERS = [
    item.split("+") if "+" in item else item
    for item in env.list("AXES_LOCKOUT_PARAMETERS", default=["username", "ip_address"])
]
AXES_RESET_ON_SUCCESS = True  # a successful login clears the failures counted before it
# The client's address: REMOTE_ADDR, or, from a proxy named in TRUSTED_PROXIES (addresses or
# networks), the address it appended to X-Forwarded-For; nobody else's header is believed.
TRUSTED_PROXIES = trusted_proxies(env.list("TRUSTED_PROXIES", default=[]))
AXES_CLIENT_IP_CALLABLE = "smtest.proxies.client_ip"

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

# PostgreSQL in production (postgres://user:pass@host:5432/smtest, through psycopg 3); each
# process keeps its connection DATABASE_CONN_MAX_AGE seconds (60 on a server, checked before reuse).
DATABASES = {
    "default": database_settings(
        env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'smtest.sqlite3'}"),
        conn_max_age=env.int("DATABASE_CONN_MAX_AGE", default=None),
        conn_health_checks=env.bool("DATABASE_CONN_HEALTH_CHECKS", default=None),
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Web and worker processes must share the failover memory, so the default cache is one that
# every local process sees (files under var/); use Redis in production (redis://host:6379/0:
# Django's own RedisCache, with CACHE_SOCKET_TIMEOUT seconds to connect and to answer).
CACHES = {
    "default": cache_settings(
        env.cache_url("CACHE_URL", default=f"filecache://{VAR_DIR / 'cache'}"),
        socket_timeout=env.float("CACHE_SOCKET_TIMEOUT", default=1.0),
    )
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
# `manage.py collectstatic` gathers the admin's and the API docs' files here; gunicorn serves
# them through WhiteNoise (docs/deployment.md, "Static files"). Compressed (gzip) copies, but
# no hashed names: a page renders whether or not collectstatic has run.
STATIC_ROOT = BASE_DIR / env.str("STATIC_ROOT", default="var/static")  # relative to the project
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# HTTPS (docs/security.md, "Deployment settings"): with DEBUG off every default is the secure
# one, and `manage.py check --deploy --fail-level WARNING` passes. A plain-HTTP run with DEBUG off
# (a local trial) sets SECURE_SSL_REDIRECT=0 and SECURE_HSTS_SECONDS=0.
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SECURE_REDIRECT_EXEMPT = [r"^(healthz|readyz|metrics)$"]  # plain-HTTP probes (docs/monitoring.md)
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
# A production-like trial with the provider sandbox (DEBUG off): its checks stop no command, but
# `manage.py check --deploy` still refuses the settings (docs/sandbox.md, "Never in production").
SANDBOX_PRODUCTION_TRIAL = env.bool("SANDBOX_PRODUCTION_TRIAL", default=False)

# Background delivery (Django's Tasks API): `database` (default; run `manage.py db_worker`),
# `rq` (RQ on REDIS_URL; run `manage.py rqworker --job-class django_tasks_rq.Job
# --with-scheduler default`), `immediate` (sends inside the request, for tests and demos), or
# `dummy` (enqueue nothing).
TASKS = tasks_settings(TASKS_BACKEND)
if TASKS_BACKEND == "rq":
    # RQ kills a task running longer than its timeout: twice a message's lease, well above the
    # longest delivery round (docs/delivery.md, "Leases").
    _lease = (
        globals().get("MAILSERVICE_LEASE_SECONDS") or mailservice_conf.DEFAULTS["MAILSERVICE_LEASE_SECONDS"]
    )
    RQ_QUEUES = rq_queues(env.str("REDIS_URL", default=""), job_timeout=int(2 * _lease))
    # `manage.py rqworker` waits for Redis to come back instead of exiting when it goes away,
    # also when started while it is down (docs/deployment.md, "Outages").
    RQ = {"WORKER_CLASS": "mailservice.rq_worker.ReconnectingWorker"}

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
# `text` (default) or `json`: one JSON object per line, with the `extra=` fields (smtest/logformat.py).
LOG_FORMAT = log_format(env.str("LOG_FORMAT", default="text"))
# LOGGING below, then Python warnings (a library's notices) as one log record each, once per process.
LOGGING_CONFIG = "smtest.logformat.configure_logging"
LOGGING = logging_config(
    formatters={
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        # Django's own, for the development server's request lines.
        "django.server": {
            "()": "django.utils.log.ServerFormatter",
            "format": "[{server_time}] {message}",
            "style": "{",
        },
    },
    handlers={
        "console": masked_handler("plain", json_lines=LOG_FORMAT == "json"),
        "django.server": masked_handler("django.server", json_lines=LOG_FORMAT == "json"),
    },
    root={"handlers": ["console"], "level": "WARNING"},
    loggers={
        "failover": {"level": LOG_LEVEL},
        "mailservice": {"level": LOG_LEVEL},
        "smtest": {"level": LOG_LEVEL},
        # Django's defaults for these two write through handlers of their own, which would not
        # mask keys: "django" goes to the root's console instead (one line each, also with DEBUG
        # on), the development server's request lines to the same output as before, masked.
        "django": {"handlers": [], "level": "INFO"},
        "django.server": {"handlers": ["django.server"], "level": "INFO", "propagate": False},
    },
)
