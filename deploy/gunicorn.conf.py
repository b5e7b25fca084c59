"""gunicorn for smtest: `gunicorn -c deploy/gunicorn.conf.py` from the project directory
(docs/deployment.md). Everything comes from the environment, as the project's settings do,
and a `.env` file in the project root is read the same way (the environment wins):

- WEB_CONCURRENCY: worker processes (default 2 × cores + 1, at most 12);
- BIND (e.g. `127.0.0.1:8000`, `unix:/run/smtest/web.sock`; several comma-separated), or
  PORT (binds 0.0.0.0:PORT, for a container); default 127.0.0.1:8000;
- GUNICORN_TIMEOUT: seconds a request may take before its worker is killed and restarted
  (default 60; the slowest request, a 30 MB message accepted, takes a few seconds);
- GUNICORN_GRACEFUL_TIMEOUT: seconds a stopping worker has to finish the requests in hand
  (default 30);
- FORWARDED_ALLOW_IPS: the proxies whose X-Forwarded-* headers are trusted (default
  127.0.0.1,::1: a proxy on the same host);
- GUNICORN_LOG_LEVEL: level of gunicorn's own log (default info);
- LOG_FORMAT=json: gunicorn's own lines as JSON objects, like the application's.

The access log goes to stdout with the path only: never the query string, the referrer or the
basic-auth user, so a credential someone put in a URL does not reach the log; its values have
their control characters escaped, so a client cannot forge a line (EscapingLogger)."""

import multiprocessing
import os
import sys
from pathlib import Path

from gunicorn.glogging import Logger, SafeAtoms

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))  # smtest.environment, smtest.logformat and mailservice.logfilters

from smtest.environment import logging_config, masked_handler  # noqa: E402 (needs the path above)
from smtest.logformat import escape_controls  # noqa: E402


def _read_dotenv() -> None:
    """`.env` in the project root, as smtest/settings.py reads it (set variables win)."""
    import environ  # django-environ: the same parser as the settings

    environ.Env.read_env(BASE_DIR / ".env")


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be a whole number, not {raw!r}") from None


_read_dotenv()
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "smtest.settings")

wsgi_app = "smtest.wsgi:application"
chdir = str(BASE_DIR)

# Workers: sync workers, each serving one request at a time. The API answers from the database
# and never waits on a provider (delivery runs in the task workers), so the classic
# 2 × cores + 1 fits; capped, since every worker holds a database connection.
workers = _int("WEB_CONCURRENCY", min(2 * multiprocessing.cpu_count() + 1, 12))
if workers < 1:
    raise SystemExit("WEB_CONCURRENCY must be 1 or more")

if os.environ.get("BIND", "").strip():
    bind = [address.strip() for address in os.environ["BIND"].split(",") if address.strip()]
elif os.environ.get("PORT", "").strip():
    bind = [f"0.0.0.0:{_int('PORT', 8000)}"]
else:
    bind = ["127.0.0.1:8000"]

timeout = _int("GUNICORN_TIMEOUT", 60)
graceful_timeout = _int("GUNICORN_GRACEFUL_TIMEOUT", 30)
keepalive = 5  # behind a proxy that reuses connections to gunicorn
# A worker is replaced after this many requests (with jitter, so they do not all restart at
# once): bounds the memory a long-running worker can accumulate.
max_requests = 2000
max_requests_jitter = 200
# The proxies allowed to set X-Forwarded-Proto/For (docs/deployment.md, "TLS"). Django decides
# HTTPS from SECURE_PROXY_SSL_HEADER; this only concerns gunicorn's own view of the request.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
# gunicorn 27's control socket (`gunicornc`) lives under the user's home, which the service user
# has none of: off.
control_socket_disable = True
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # heartbeat files off the disk

# Logs: errors to stderr, the access log to stdout; both pass the project's masking of API keys
# and configured secrets (mailservice/logfilters.py).
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")
# Remote address, time, method, path WITHOUT the query string, protocol, status, bytes, duration
# in milliseconds, user agent. No %(r)s (it holds the query), no %(f)s (a referrer's query), no
# %(u)s (the webhook's basic-auth user).
access_log_format = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms "%(a)s"'


class EscapedAtoms(SafeAtoms):
    """The values of an access log line, each kept inside its field whatever the client sent:
    gunicorn decodes `%0d%0a` in the path to CR LF, which would start a forged line. A backslash
    is doubled, then every control character escaped (`\\r`, `\\n`, `\\x1b`, `\\u2028`), then
    gunicorn's SafeAtoms escapes the quotes."""

    def __init__(self, atoms: dict) -> None:
        super().__init__(
            {
                name: escape_controls(value.replace("\\", "\\\\")) if isinstance(value, str) else value
                for name, value in atoms.items()
            }
        )


class EscapingLogger(Logger):
    """gunicorn's logger, its access log lines escaped (EscapedAtoms)."""

    atoms_wrapper_class = EscapedAtoms


logger_class = EscapingLogger

_json = os.environ.get("LOG_FORMAT", "text").strip().lower() == "json"
logconfig_dict = logging_config(
    formatters={
        "access": {"format": "%(message)s"},
        "error": {"format": "%(asctime)s [%(process)d] [%(levelname)s] %(message)s"},
    },
    handlers={
        "access": masked_handler("access", json_lines=_json, stream="ext://sys.stdout"),
        "error": masked_handler("error", json_lines=_json, stream="ext://sys.stderr"),
    },
    root={"level": "WARNING", "handlers": ["error"]},
    loggers={
        "gunicorn.error": {"level": loglevel.upper(), "handlers": ["error"], "propagate": False},
        "gunicorn.access": {"level": "INFO", "handlers": ["access"], "propagate": False},
    },
)
