"""The worker class of `manage.py rqworker` (TASKS_BACKEND=rq): RQ's own worker, except that it
waits for Redis to come back instead of exiting when Redis goes away (docs/deployment.md,
"Outages"). Settings name it as `mailservice.rq_worker.ReconnectingWorker`.

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

This package is the one place that depends on RQ's worker internals, and it imports only RQ and
redis, nothing of the gateway:
- `outages.py`: which errors mean Redis is away, and waiting for it (backoff, log lines);
- `scheduler.py`: RQ's scheduler process, waiting for Redis;
- `worker.py`: RQ's worker, waiting for Redis; the methods it overrides are where RQ's worker
  talks to Redis.
The tests name the RQ version they were read in (tests/mailservice/test_rq_worker.py); read
those methods again before upgrading RQ.
"""

from mailservice.rq_worker.worker import ReconnectingWorker

__all__ = ["ReconnectingWorker"]
