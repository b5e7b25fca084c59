"""RQ's forking worker, waiting for Redis instead of exiting when it is unreachable
(docs/deployment.md, "Outages"). The methods overridden here are where RQ's worker talks to
Redis: read them again in RQ's worker/base.py before upgrading RQ."""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from rq import worker_registration
from rq.defaults import DEFAULT_LOGGING_DATE_FORMAT, DEFAULT_LOGGING_FORMAT
from rq.exceptions import DequeueTimeout, StopRequested
from rq.logutils import blue, green
from rq.utils import now
from rq.worker import Worker, WorkerStatus

from mailservice.rq_worker.outages import RedisWait, is_redis_outage
from mailservice.rq_worker.scheduler import ReconnectingScheduler

logger = logging.getLogger(__name__)

# The worker's command listener (a thread of its own) retries this often, silently: the main
# loop reports the outage.
LISTENER_RETRY_DELAY = 2.0


class ReconnectingWorker(Worker):
    """RQ's forking worker, waiting for Redis instead of exiting when it is unreachable.

    Two kinds of calls to Redis: those made while no work horse runs wait for Redis
    (`_with_redis`); those made while a horse runs, or from a signal handler, never wait
    (`_noting_outage`), since the horse must be watched and a stop must stay prompt."""

    _address_pending = False

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.redis_wait = RedisWait(f"RQ worker {self.name}", extra={"rq_worker": self.name})

    # Waiting --------------------------------------------------------------------------------

    def _with_redis(self, call: Callable[[], Any]) -> Any:
        """`call()`, waiting for Redis and calling again for as long as Redis is unreachable.
        The horse never waits."""
        if self.is_horse:
            return call()
        while True:
            try:
                if self.redis_wait.down:
                    self._rejoin()
                    self.redis_wait.back()
                return call()
            except Exception as error:
                if not is_redis_outage(error):
                    raise
                self._wait_for_redis(error)

    def _wait_for_redis(self, error: BaseException) -> None:
        """Back off until Redis answers and the worker is registered again; StopRequested if
        the worker is told to stop meanwhile."""
        if not self.redis_wait.wait(error, self._rejoin, stopping=self._stopping):
            raise StopRequested() from error

    def _stopping(self) -> bool:
        return self._stop_requested

    def _noting_outage(self, call: Callable[[], Any]) -> None:
        """`call()`, skipped with the outage noted (logged once) if Redis is unreachable."""
        try:
            call()
            if self.redis_wait.down:
                self._rejoin()
                self.redis_wait.back()
        except Exception as error:
            if not is_redis_outage(error):
                raise
            self.redis_wait.lost(error)

    def _rejoin(self) -> None:
        """Redis answers again: register the worker again (Redis may have restarted empty)."""
        self.connection.ping()
        if self._address_pending:
            self._set_ip_address(self.connection)
        if self.birth_date is not None:
            self._register_again()

    def _register_again(self) -> None:
        """The worker's record and its place among the workers, as RQ's register_birth writes
        them, without its check for a live worker of the same name: that one is this worker."""
        with self.connection.pipeline() as pipeline:
            pipeline.hset(self.key, mapping={**self.serialize(), "state": str(self.get_state())})
            worker_registration.register(self, pipeline)
            pipeline.expire(self.key, self.worker_ttl + 60)
            pipeline.execute()

    # Starting and stopping --------------------------------------------------------------------

    def _set_ip_address(self, connection: Any) -> None:
        try:
            super()._set_ip_address(connection)
        except Exception as error:
            if not is_redis_outage(error):
                raise
            # Redis is away as the worker starts: bootstrap() waits for it, and learns this then.
            self.ip_address = "unknown"
            self._address_pending = True
        else:
            self._address_pending = False

    def work(self, *args: Any, **kwargs: Any) -> bool:
        try:
            return super().work(*args, **kwargs)
        except StopRequested:
            # Told to stop while starting (waiting for Redis), before RQ's loop, which handles a
            # stop itself, began.
            logger.info("RQ worker %s: stopped while starting", self.name, extra={"rq_worker": self.name})
            if self.birth_date is not None:
                self.teardown()
            return False

    def bootstrap(self, *args: Any, **kwargs: Any) -> None:
        # RQ installs its signal handlers after bootstrap(): here, so that a stop ends the wait
        # for Redis at start-up.
        self._install_signal_handlers()
        super().bootstrap(*args, **kwargs)

    def register_birth(self) -> None:
        self._with_redis(self._register)

    def _register(self) -> None:
        if self._address_pending:
            self._set_ip_address(self.connection)
        if self.birth_date is None:
            super().register_birth()
        else:  # an earlier attempt may have been written before Redis went away
            self._register_again()

    def subscribe(self) -> None:
        self._with_redis(self._subscribe)

    def _subscribe(self) -> None:
        if self.pubsub is not None:  # what an attempt cut short by the outage left
            self.pubsub.close()
        super().subscribe()

    def _start_scheduler(
        self,
        burst: bool = False,
        logging_level: str | None = "INFO",
        date_format: str = DEFAULT_LOGGING_DATE_FORMAT,
        log_format: str = DEFAULT_LOGGING_FORMAT,
    ) -> None:
        """RQ's, with the scheduler process that waits for Redis (a burst runs no process)."""
        if burst:
            return super()._start_scheduler(burst, logging_level, date_format, log_format)
        self.scheduler = ReconnectingScheduler(
            self.queues,
            connection=self.connection,
            logging_level=logging_level if logging_level is not None else self.log.level,
            date_format=date_format,
            log_format=log_format,
            serializer=self.serializer,
        )
        self._with_redis(self.scheduler.acquire_locks)
        if self.scheduler.acquired_locks:
            self.scheduler.start()

    def register_death(self) -> None:
        left = "its record expires by itself"
        self.redis_wait.stop_step(super().register_death, undone="unregistering", left=left)

    def unsubscribe(self) -> None:
        try:
            super().unsubscribe()
        except Exception as error:
            if not is_redis_outage(error):
                raise
            self.pubsub_thread.stop()  # stop listening without telling Redis

    def set_shutdown_requested_date(self) -> None:
        self._noting_outage(super().set_shutdown_requested_date)  # runs in a signal handler

    def _pubsub_exception_handler(self, exc: Exception, pubsub: Any, pubsub_thread: Any) -> None:
        if not is_redis_outage(exc):
            super()._pubsub_exception_handler(exc, pubsub, pubsub_thread)
            return
        # redis-py subscribes again when it reconnects; the main loop reports the outage.
        time.sleep(LISTENER_RETRY_DELAY)

    # The loop ---------------------------------------------------------------------------------

    def set_state(self, state: str, pipeline: Any = None) -> None:
        if pipeline is not None:
            super().set_state(state, pipeline=pipeline)
        else:
            self._with_redis(functools.partial(super().set_state, state))

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        if pipeline is not None:
            super().heartbeat(timeout, pipeline=pipeline)
        elif self.horse_pid:  # watching the horse comes first
            self._noting_outage(functools.partial(super().heartbeat, timeout))
        else:
            self._with_redis(functools.partial(super().heartbeat, timeout))

    def maintain_heartbeats(self, job: Any, execution: Any) -> None:
        self._noting_outage(functools.partial(super().maintain_heartbeats, job, execution))

    def check_for_suspension(self, burst: bool) -> None:
        self._with_redis(functools.partial(super().check_for_suspension, burst))

    def run_maintenance_tasks(self) -> None:
        self._with_redis(super().run_maintenance_tasks)

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        """RQ's, except that an unreachable Redis is waited for with `_with_redis`'s backoff and
        log lines, not retried with a line at every attempt."""
        result = None
        qnames = ",".join(self.queue_names())
        self.set_state(WorkerStatus.IDLE)
        self.procline("Listening on " + qnames)
        idle_since = now()
        idle_time_left = max_idle_time
        while True:
            try:
                self.heartbeat()
                if self.should_run_maintenance_tasks:
                    self.run_maintenance_tasks()
                if timeout is not None and idle_time_left is not None:
                    timeout = min(timeout, idle_time_left)
                result = self.queue_class.dequeue_any(
                    self._ordered_queues,
                    timeout,
                    connection=self.connection,
                    job_class=self.job_class,
                    serializer=self.serializer,
                    death_penalty_class=self.death_penalty_class,
                )
                if result is not None:
                    job, queue = result
                    self.reorder_queues(reference_queue=queue)
                    job.redis_server_version = self.get_redis_server_version()
                    if self.log_job_description:
                        self.log.info(
                            "Worker %s: %s: %s (%s)",
                            self.name,
                            green(queue.name),
                            blue(job.description),
                            job.id,
                        )
                    else:
                        self.log.info("Worker %s: %s: %s", self.name, green(queue.name), job.id)
                break
            except DequeueTimeout:
                if max_idle_time is not None:
                    idle_time_left = math.ceil(max_idle_time - (now() - idle_since).total_seconds())
                    if idle_time_left <= 0:
                        break
            except Exception as error:
                if not is_redis_outage(error):
                    raise
                self._wait_for_redis(error)
        self.heartbeat()
        return result

    def execute_job(self, job: Any, queue: Any) -> None:
        try:
            super().execute_job(job, queue)
        except Exception as error:
            if not is_redis_outage(error):
                raise
            # Redis went away around this job: before its horse started, or before RQ recorded
            # how the horse ended (the horse has exited either way: watching it never raises).
            self.executions.clear()
            self.redis_wait.lost(error)
            logger.warning(
                "RQ worker %s: job %s ended without its record in Redis; the outbox says what was sent",
                self.name,
                job.id,
                extra={"rq_worker": self.name, "rq_job": job.id},
            )
            self.set_state(WorkerStatus.IDLE)
