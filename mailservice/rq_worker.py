"""The worker class of `manage.py rqworker` (TASKS_BACKEND=rq): RQ's own worker, except that it
waits for Redis to come back instead of exiting when Redis goes away (docs/deployment.md,
"Outages").

RQ's worker quits on most Redis connection errors its loop meets ("unhandled exception,
quitting"), a worker started while Redis is down exits at once, and the scheduler process of
`--with-scheduler` dies with the first error. One Redis restart would then leave no worker
running until something restarts them, and delivery would wait for the recovery pass. Here each
place where the worker talks to Redis outside a job waits for it instead, with a capped backoff
and one log line per change (Redis lost, still lost every minute, back); once Redis answers the
worker registers itself again and takes jobs as before. SIGTERM and SIGINT stop a waiting worker
at once. Only connection errors and timeouts are waited out: any other error ends the worker as
RQ would, and so does a refused password (a configuration error, not an outage).

RQ's bookkeeping of a job that was running when Redis went away may be lost; the Message rows,
not RQ, say what is left to send (docs/delivery.md), so nothing here tries to save it.

This module is the one place that depends on RQ's worker internals: the methods overridden below
are where RQ's worker and scheduler talk to Redis. The tests name the RQ version they were read
in (tests/mailservice/test_rq_worker.py); read those methods again before upgrading RQ.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import redis.exceptions
from rq import worker_registration
from rq.defaults import DEFAULT_LOGGING_DATE_FORMAT, DEFAULT_LOGGING_FORMAT
from rq.exceptions import DequeueTimeout, StopRequested
from rq.logutils import blue, green
from rq.scheduler import RQScheduler
from rq.utils import now
from rq.worker import Worker, WorkerStatus

logger = logging.getLogger(__name__)

# The backoff between attempts to reach Redis: FIRST_DELAY seconds, doubling up to MAX_DELAY,
# short enough that a worker is back at work within seconds of Redis (one PING per attempt).
FIRST_DELAY = 1.0
MAX_DELAY = 5.0
# While Redis stays away, one "still unreachable" line every REPORT_EVERY seconds.
REPORT_EVERY = 60.0
# A wait checks this often whether the process was told to stop.
STOP_CHECK_EVERY = 0.2
# The worker's command listener (a thread of its own) retries this often, silently: the main
# loop reports the outage.
LISTENER_RETRY_DELAY = 2.0

OUTAGE_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
# Connection errors by redis-py's classes that waiting does not cure.
CONFIGURATION_ERRORS = (redis.exceptions.AuthenticationError, redis.exceptions.AuthorizationError)


def is_redis_outage(error: BaseException) -> bool:
    """Whether `error` says Redis cannot be reached now (down, restarting, loading its data,
    too slow), as opposed to a misconfiguration or a bug."""
    return isinstance(error, OUTAGE_ERRORS) and not isinstance(error, CONFIGURATION_ERRORS)


def backoff_delay(attempt: int, *, first: float = FIRST_DELAY, cap: float = MAX_DELAY) -> float:
    """Seconds to wait before attempt `attempt` (0 for the first) to reach Redis again."""
    return min(cap, first * 2 ** min(attempt, 32))


def _never() -> bool:
    return False


class RedisWait:
    """One process's view of Redis: whether it is reachable, the backoff while it is not, and
    the log lines (Redis lost; still lost every REPORT_EVERY seconds; back)."""

    def __init__(
        self,
        who: str,
        *,
        extra: dict[str, Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ):
        self.who = who
        self.extra = extra or {}
        self._clock, self._sleep = clock, sleep
        self._down_since: float | None = None
        self._next_report = 0.0
        self._attempt = 0

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def lost(self, error: BaseException) -> None:
        """Redis failed us: log it, unless it is already known to be away."""
        if self.down:
            return
        self._down_since = self._clock()
        self._next_report = self._down_since + REPORT_EVERY
        logger.warning(
            "%s: Redis unreachable (%s); waiting for it, retrying with backoff up to %g s",
            self.who,
            error,
            MAX_DELAY,
            extra=self.extra,
        )

    def back(self) -> None:
        """Redis answered again: log how long it was away."""
        if not self.down:
            return
        seconds = self._clock() - self._down_since
        self._down_since = None
        self._attempt = 0
        logger.warning(
            "%s: Redis reachable again after %.1f s; back at work",
            self.who,
            seconds,
            extra={**self.extra, "redis_down_seconds": round(seconds, 1)},
        )

    def wait(
        self, error: BaseException, probe: Callable[[], object], *, stopping: Callable[[], bool] = _never
    ) -> bool:
        """After `error`, call `probe` with backoff until it no longer fails for want of Redis.
        True once it succeeds; False as soon as `stopping()` is true. Other errors propagate."""
        self.lost(error)
        while True:
            if not self._pause(backoff_delay(self._attempt), stopping):
                return False
            self._attempt += 1
            try:
                probe()
            except Exception as failure:
                if not is_redis_outage(failure):
                    raise
                self._report(failure)
                continue
            self.back()
            return True

    def _pause(self, seconds: float, stopping: Callable[[], bool]) -> bool:
        deadline = self._clock() + seconds
        while not stopping():
            left = deadline - self._clock()
            if left <= 0:
                return True
            self._sleep(min(left, STOP_CHECK_EVERY))
        return False

    def _report(self, error: BaseException) -> None:
        moment = self._clock()
        if self._down_since is None or moment < self._next_report:
            return
        self._next_report = moment + REPORT_EVERY
        seconds = moment - self._down_since
        logger.warning(
            "%s: Redis still unreachable after %d s (%s)",
            self.who,
            seconds,
            error,
            extra={**self.extra, "redis_down_seconds": round(seconds, 1)},
        )


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
        try:
            self.stop()
        except Exception as error:
            if not is_redis_outage(error):
                raise
            logger.warning(
                "RQ scheduler %s: stopped without releasing its locks, Redis is unreachable; "
                "they expire by themselves",
                self.name,
                extra={"rq_scheduler": self.name},
            )

    def _ping(self) -> None:
        self.connection.ping()

    def _stopping(self) -> bool:
        return self._stop_requested


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
        try:
            super().register_death()
        except Exception as error:
            if not is_redis_outage(error):
                raise
            logger.warning(
                "RQ worker %s: stopped without unregistering, Redis is unreachable; "
                "its record expires by itself",
                self.name,
                extra={"rq_worker": self.name},
            )

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
