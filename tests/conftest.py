"""pytest's hooks for the whole suite (the tests themselves are Django TestCase classes)."""
import pytest


@pytest.fixture(autouse=True)
def _no_owed_wake_up_outlives_its_test():
    """A test that makes an enqueue fail leaves a retry owed (mailservice/tasks.py); the retry
    must not enqueue into a later test's queue."""
    yield
    from mailservice.tasks import forget_owed_wake_up

    forget_owed_wake_up()
