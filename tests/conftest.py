"""pytest's hooks for the whole suite (the tests themselves are Django TestCase classes)."""

import pytest


@pytest.fixture(autouse=True)
def _no_owed_wake_up_outlives_its_test():
    """A test that makes an enqueue fail leaves a retry owed (mailservice/tasks.py); the retry
    must not enqueue into a later test's queue."""
    yield
    from mailservice.tasks import forget_owed_wake_up

    forget_owed_wake_up()


# The tests that take tens of seconds or start real servers and processes: marked `slow` here,
# in one place, so `make test-fast` (-m "not slow") leaves them out (docs/testing.md).
SLOW = (
    "tests/acceptance/",
    "tests/servers/",
    "tests/e2e/",
    "tests/hardening/test_fuzz_admin.py",
    "tests/hardening/test_fuzz_api.py",
    "tests/project/test_docker_image.py",
    "tests/project/test_gunicorn.py",
    "tests/project/test_gunicorn_access_log.py",
    "tests/project/test_packaging.py",
    "tests/project/test_production_settings.py",
    "tests/project/test_security_settings.py",
    "tests/sandbox/test_process.py",
)


def pytest_collection_modifyitems(config, items):
    for item in items:
        path = item.nodeid.split("::", 1)[0]
        if path.startswith(SLOW):
            item.add_marker(pytest.mark.slow)
