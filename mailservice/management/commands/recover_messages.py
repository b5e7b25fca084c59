"""`manage.py recover_messages [--loop]`: wake delivery again for messages whose wake-up was lost
or whose worker died (expired lease). Run it once from cron, or with --loop as a service next to
the workers."""

import logging
import signal
import threading

from django.core.management.base import BaseCommand
from django.db import close_old_connections

from mailservice import conf
from mailservice.services.recovery import message_recover

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Wake delivery again for messages whose wake-up was lost or whose worker died."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--loop", action="store_true", help="Run a pass every --interval seconds until stopped."
        )
        parser.add_argument(
            "--interval", type=float, help="Seconds between passes (MAILSERVICE_RECOVERY_INTERVAL)."
        )

    def handle(self, *args, loop: bool, interval: float | None, **options) -> None:
        if not loop:
            self.stdout.write(f"Recovered {message_recover()} message(s).")
            return
        interval = conf.recovery_interval() if interval is None else interval
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        logger.info("recovery loop started interval=%ss", interval, extra={"interval": interval})
        while not stop.is_set():
            close_old_connections()
            try:
                message_recover()
            except Exception:  # a locked or briefly unreachable database must not end the loop
                logger.exception("recovery pass failed")
            stop.wait(interval)
        logger.info("recovery loop stopped")
