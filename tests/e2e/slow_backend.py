"""A provider for worker-process tests: every send takes SLOW_BACKEND_SECONDS, nothing leaves
the process (Django's locmem backend underneath), and each finished send adds a line to
SLOW_BACKEND_LOG when it is set, so a test can tell how far a worker has gone."""

import os
import time

from django.core.mail.backends.locmem import EmailBackend


class SlowBackend(EmailBackend):
    def send_messages(self, messages):
        time.sleep(float(os.environ.get("SLOW_BACKEND_SECONDS", "0.1")))
        sent = super().send_messages(messages)
        if os.environ.get("SLOW_BACKEND_LOG"):
            with open(os.environ["SLOW_BACKEND_LOG"], "a") as log:
                log.write(f"{len(messages)}\n")
        return sent
