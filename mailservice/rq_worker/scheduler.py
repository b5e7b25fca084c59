"""RQ's scheduler process (`--with-scheduler`), waiting for Redis instead of dying with the first
error (docs/deployment.md, "Outages")."""

from __future__ import annotations

import time

from rq.scheduler import RQScheduler

from mailservice.rq_worker.outages import RedisWait, is_redis_outage


class ReconnectingScheduler(RQScheduler):
    """RQ's scheduler process (`--with-scheduler`), waiting for Redis instead of exiting."""

    def work(self) -> None:
        """RQ's scheduler loop, with each pass that fails for want of Redis waited out."""
        self._install_signal_handlers()
        wait = RedisWait(f"RQ scheduler {self.name}", extra={"rq_scheduler": self.name})
        registered = False
        while not self._stop_requested:
            try:
                if not registered:
                    self.register_birth()
                    registered = True
                if self.should_reacquire_locks:
                    self.acquire_locks()
                self.heartbeat()  # also takes back a lock that expired while Redis was away
                self.enqueue_scheduled_jobs()
            except Exception as error:
                if not is_redis_outage(error):
                    raise
                registered = False  # its record may have gone with Redis
                if not wait.wait(error, self._ping, stopping=self._stopping):
                    break
                continue
            time.sleep(self.interval)
        wait.stop_step(self.stop, undone="releasing its locks", left="they expire by themselves")

    def _ping(self) -> None:
        self.connection.ping()

    def _stopping(self) -> bool:
        return self._stop_requested
