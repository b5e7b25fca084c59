"""The production stack's processes as docs/deployment.md runs them, on loopback: for the tests
that run the whole stack (tests/servers/test_chaos.py, tests/acceptance/) and for
bench/production_stack.py, which measures it. No Django import: a benchmark script uses it as is.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.e2e.processes import OPENER, ROOT, Process, clean_environment, wait_until
from tests.project.gunicorn_process import Gunicorn
from tests.servers.real import PostgresServer, RedisServer

# The unit file's command (deploy/): the worker class comes from the settings, not a flag.
RQ_WORKER = ("rqworker", "--job-class", "django_tasks_rq.Job", "--with-scheduler", "default")
QUEUE_DB = 1  # the Redis database of the task queue; the cache has database 0


def production_environment(postgres: PostgresServer, redis: RedisServer, **extra: str) -> dict[str, str]:
    """What docs/deployment.md gives every process of the stack, on loopback: DEBUG off, plain
    HTTP with no proxy in front (no redirect to HTTPS, no HSTS), PostgreSQL, the Redis cache and
    RQ, INFO logs, and no API rate limit (a burst of posts would measure the limit)."""
    return clean_environment(
        DJANGO_SETTINGS_MODULE="smtest.settings",
        DEBUG="0",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="127.0.0.1",
        SECURE_SSL_REDIRECT="0",
        SECURE_HSTS_SECONDS="0",
        DATABASE_URL=f"{postgres.url}?connect_timeout=3",
        CACHE_URL=redis.url_for(0),
        TASKS_BACKEND="rq",
        REDIS_URL=redis.url_for(QUEUE_DB),
        ANYMAIL_WEBHOOK_SECRET=f"stack:{secrets.token_urlsafe(16)}",
        MAILSERVICE_API_RATE_LIMIT="0",
        LOG_LEVEL="INFO",
        **extra,
    )


def manage(*args: str, env: dict[str, str], timeout: float = 180) -> str:
    """`manage.py ARGS` in a child process; its standard output, or AssertionError with its errors."""
    command = [sys.executable, str(ROOT / "manage.py"), *args]
    return run(command, env=env, timeout=timeout)


def run(command: list[str], *, env: dict[str, str], timeout: float = 180) -> str:
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode:
        raise AssertionError(
            f"{' '.join(command[1:])} exited with {result.returncode}:\n{result.stderr[-4000:]}"
        )
    return result.stdout


def start_processes(
    env: dict[str, str], log_dir: Path, port: int, cleanup: Callable
) -> tuple[Gunicorn, list[Process], Process]:
    """gunicorn with deploy/gunicorn.conf.py on `port`, two RQ workers and the recovery loop, as
    docs/deployment.md runs them, once they answer; each one's stop is handed to
    `cleanup(function, *args)` as it starts (a class cleanup, an ExitStack's callback)."""
    web = Gunicorn(env, log_dir, port)
    cleanup(web.stop)

    def healthy() -> bool:
        try:
            with OPENER.open(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
                return response.status == 200
        except OSError:  # refused, or an error status
            return False

    wait_until(healthy, timeout=60, what="gunicorn to answer /healthz")
    workers = [start_rq_worker(f"worker-{n}", env, log_dir) for n in (1, 2)]
    for worker in workers:
        cleanup(stop_rq_worker, worker)
    command = [sys.executable, str(ROOT / "manage.py"), "recover_messages", "--loop"]
    recovery = Process("recovery", command, env, log_dir)
    cleanup(recovery.stop)
    wait_listening(workers, recovery)
    return web, workers, recovery


def start_rq_worker(name: str, env: dict[str, str], log_dir: Path) -> Process:
    """`manage.py rqworker` as the unit file runs it; stop it with stop_rq_worker()."""
    return Process(name, [sys.executable, str(ROOT / "manage.py"), *RQ_WORKER], env, log_dir)


def wait_listening(workers: list[Process], *others: Process, timeout: float = 90) -> None:
    """Until every RQ worker listens on the queue; AssertionError if one of them, or of
    `others`, exits meanwhile."""

    def listening() -> bool:
        for process in (*workers, *others):
            if not process.alive():
                raise AssertionError(f"{process.name} exited:\n{process.output()}")
        return all("Listening on" in worker.log_path.read_text(errors="replace") for worker in workers)

    wait_until(listening, timeout=timeout, interval=0.25, what="the RQ workers to listen on the queue")


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, pgrp) of a live process, None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1]), int(fields[2])


def horses(worker: Process) -> list[int]:
    """The RQ worker's work horses: its live children in a process group other than its own
    (RQ's scheduler, the other child, stays in the worker's group)."""
    parent = worker.popen.pid
    children: set[int] = set()
    if os.path.exists(f"/proc/{parent}/task/{parent}/children"):
        for task in os.listdir(f"/proc/{parent}/task"):
            try:
                with open(f"/proc/{parent}/task/{task}/children") as listed:
                    children.update(int(pid) for pid in listed.read().split())
            except OSError:  # the thread has ended
                pass
    else:  # a kernel without CONFIG_PROC_CHILDREN, or the worker is gone: every process
        children.update(int(entry) for entry in os.listdir("/proc") if entry.isdigit())
    found = []
    for pid in sorted(children):
        stat = proc_stat(pid)
        if stat and stat[0] != "Z" and stat[1] == parent and stat[2] != parent:
            found.append(pid)
    return found


def provider_connections(pid: int, port: int) -> int:
    """How many established TCP connections process `pid` holds to the loopback `port`."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        return 0
    # A line of /proc/net/tcp: "sl local rem st tx:rx tr:when retrnsmt uid timeout inode …";
    # the remote port in hex, state 01 (established).
    line = re.compile(rf"^\s*\d+: \S+ [0-9A-F]+:{port:04X} 01 \S+ \S+ \S+ +\d+ +\d+ +(\d+)", re.M)
    found = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as text:
                found += sum(1 for inode in line.findall(text.read()) if inode in inodes)
        except OSError:
            pass
    return found


def stop_rq_worker(worker: Process) -> None:
    """Process.stop signals the worker's process group, but a work horse sits in a group of its
    own: told to stop, the worker starts no new horse and waits for the one it has, which is
    killed here, so none outlives its worker."""
    if worker.alive():
        worker.popen.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    while worker.alive() and time.monotonic() < deadline:
        for pid in horses(worker):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    worker.stop()
