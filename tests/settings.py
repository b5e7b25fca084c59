"""Settings for the test suite: the project's own (smtest/settings.py), plus what only tests need.

pytest uses them (pyproject.toml) and so does `python manage.py test` (manage.py).
"""

import os
import sys

# The suite runs with DEBUG off, where the project's settings refuse to start without a key.
os.environ.setdefault("SECRET_KEY", "tests-only-secret-key-" + "x" * 40)

from smtest.settings import *  # noqa: E402, F403
from smtest.settings import DATABASES, VAR_DIR  # noqa: E402

# A file, not SQLite's shared in-memory database, so threads (the concurrency tests) get real
# locking with the busy timeout, and the end-to-end tests' worker process can open it; one file
# per run, so two suites (two interpreters, two checkouts) never collide. On a server database
# (DATABASE_URL=postgres://…) the test database gets the same per-run name, so two suites may
# share one server; child processes open it through tests.e2e.processes.database_url().
_RUN = f"py{sys.version_info[0]}{sys.version_info[1]}-{os.getpid()}"
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    DATABASES["default"].setdefault("TEST", {"NAME": str(VAR_DIR / f"test-{_RUN}.sqlite3")})
else:
    DATABASES["default"].setdefault(
        "TEST", {"NAME": f"test_{DATABASES['default']['NAME']}_{_RUN}".replace("-", "_")}
    )

# Django's test runner runs the system checks with DEBUG off, where the webhook-secret check
# would stop every run; the tests set the secrets they need (and test the check itself).
SILENCED_SYSTEM_CHECKS = ["mailservice.E101"]

# The test client speaks plain HTTP, as a local run with DEBUG off does with SECURE_SSL_REDIRECT=0
# (tests/project/test_security_settings.py checks the production defaults in a subprocess).
SECURE_SSL_REDIRECT = False

# The suite scrapes /metrics as a deployment that opened it does; with DEBUG off it is closed
# otherwise (tests/ops/test_metrics.py checks that default).
MAILSERVICE_METRICS_PUBLIC = True
