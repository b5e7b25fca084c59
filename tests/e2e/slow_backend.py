"""A provider for worker-process tests: every send takes SLOW_BACKEND_SECONDS, nothing leaves
the process (Django's locmem backend underneath)."""
import os
import time

from django.core.mail.backends.locmem import EmailBackend


class SlowBackend(EmailBackend):
    def send_messages(self, messages):
        time.sleep(float(os.environ.get("SLOW_BACKEND_SECONDS", "0.1")))
        return super().send_messages(messages)
