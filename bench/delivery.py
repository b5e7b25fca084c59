"""Delivery at volume: smtest's outbox and worker against django-post-office and the Anymail backend alone.

All three send to one local SendGrid-like HTTP server (its own process, 127.0.0.1), which answers
202 at once or after a set latency (a real ESP takes tens of milliseconds), with the same N
messages, their SQLite files in temporary directories:

- **smtest**: a temporary database (`DATABASE_URL`), the database task queue, the failover chain
  `sendgrid` pointed at the local server. N messages are accepted through the service call the
  API uses (`check_message` + `message_accept`), then `manage.py db_worker` processes (1, then 2)
  drain the outbox until every message is `sent`.
- **django-post-office**: installed by this script into a throwaway virtualenv (never a project
  dependency), in a tiny generated project with the same SQLite options; `mail.send()` N times,
  then `manage.py send_queued_mail` (1 process with its default 5 threads, then `--processes 2`).
- **the Anymail SendGrid backend alone**, one connection, N sends in a loop, no database: the limit.

Run: .venv/bin/python bench/delivery.py [--messages 1000] [--latency-ms 0,50] [--rss-messages 10000]
                                        [--quick] [--write-docs]
Nothing leaves 127.0.0.1 (pip installs django-post-office from the configured package index).
Every process it starts is stopped before it exits; every wait is bounded.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from loopback import free_port, wait_for_port  # bench/loopback.py (this folder is on sys.path)

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"
POST_OFFICE_REQUIREMENT = "django-post-office==3.12.*"
# The same SQLite options smtest uses (smtest/environment.py), for both databases, so the
# comparison is between the designs, not the database tuning.
SQLITE_OPTIONS = {
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    "transaction_mode": "IMMEDIATE",
    "timeout": 20,
}
FROM = "bench@example.com"
TEXT = "Hello, this is a benchmark message from the delivery benchmark. " * 4  # about 260 characters
POLL = 0.025  # seconds between database polls while a drain runs


def message_fields(i: int) -> dict[str, str]:
    return {"to": f"rcpt{i}@example.net", "subject": f"Bench message {i}", "text": TEXT}


# The local provider ---------------------------------------------------------------------------


class SendGridLike(BaseHTTPRequestHandler):
    """SendGrid's send API as far as Anymail needs it (202, empty body), after `latency` seconds.
    GET /_stats and POST /_reset?latency=<s> are the benchmark's own control calls."""

    protocol_version = "HTTP/1.1"  # keep-alive, as the real API
    latency = 0.0
    lock = threading.Lock()
    stats = {"count": 0, "first": None, "last": None}

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path.startswith("/_reset"):
            with self.lock:
                SendGridLike.latency = float(json.loads(body or b"{}").get("latency", 0.0))
                SendGridLike.stats = {"count": 0, "first": None, "last": None}
            return self._answer(200, b"{}")
        arrived = time.monotonic()  # CLOCK_MONOTONIC: one clock for every process on the machine
        if self.latency:
            time.sleep(self.latency)
        with self.lock:
            stats = SendGridLike.stats
            stats["count"] += 1
            stats["first"] = arrived if stats["first"] is None else min(stats["first"], arrived)
            stats["last"] = time.monotonic()
        self._answer(202, b"")

    def do_GET(self):  # noqa: N802
        with self.lock:
            body = json.dumps({**SendGridLike.stats, "latency": SendGridLike.latency}).encode()
        self._answer(200, body)

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # A worker opens up to MAILSERVICE_SEND_CONCURRENCY connections at once; socketserver's
    # backlog of 5 would reset some of them, which no real ESP does.
    request_queue_size = 128


def serve(port: int) -> None:
    _Server(("127.0.0.1", port), SendGridLike).serve_forever()


def control(port: int, method: str, path: str, payload: dict | None = None) -> dict:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        body = json.dumps(payload).encode() if payload is not None else None
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        return json.loads(conn.getresponse().read() or b"{}")
    finally:
        conn.close()


# Roles run in child processes (`--role ...`): each prints one JSON line -------------------------


class QueryCounter:
    """A `connection.execute_wrapper` that counts statements by kind (and, for the queue, by table)."""

    def __init__(self) -> None:
        self.kinds: dict[str, int] = {}
        self.queue = 0

    def __call__(self, execute, sql, params, many, context):
        kind = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else "?"
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        if "django_tasks_database" in sql or "django_tasks_db" in sql:
            self.queue += 1
        return execute(sql, params, many, context)

    @property
    def total(self) -> int:
        return sum(self.kinds.values())

    def as_dict(self) -> dict:
        return {"total": self.total, "kinds": self.kinds, "queue": self.queue}


def role_smtest_migrate(args) -> None:
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    print(json.dumps({"ok": True}))


def _smtest_accept(n: int, count_first: int = 20) -> dict:
    """Accept n messages through the service call the API uses; the first `count_first` with
    their statements counted."""
    from django.db import connection

    from mailservice.schemas import MessageIn
    from mailservice.services.messages import message_accept
    from mailservice.validation import check_message

    bodies = [MessageIn.model_validate({"from": FROM, **message_fields(i)}) for i in range(n)]
    counter = QueryCounter()
    ids = []
    started = time.perf_counter()
    with connection.execute_wrapper(counter):
        for body in bodies[:count_first]:
            ids.append(message_accept(draft=check_message(body))[0].pk)
    for body in bodies[count_first:]:
        ids.append(message_accept(draft=check_message(body))[0].pk)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "ids": ids, "queries": counter.as_dict(), "counted": min(count_first, n)}


def role_smtest_accept(args) -> None:
    import django

    django.setup()
    result = _smtest_accept(args.n)
    result.pop("ids")
    print(json.dumps(result))


def role_smtest_queries(args) -> None:
    """Accept n messages, then drain them in this process with django-tasks-db's own worker loop
    (the same code `manage.py db_worker` runs), counting every statement."""
    import django

    django.setup()
    from django.db import connection
    from django_tasks_db.management.commands.db_worker import Worker

    from mailservice.models import Message

    accepted = _smtest_accept(args.n, count_first=args.n)
    counter = QueryCounter()
    worker = Worker(
        queue_names=["default"],
        interval=0,
        batch=True,
        backend_name="default",
        startup_delay=False,
        max_tasks=None,
        worker_id="bench-queries",
        excluded_queue_names=[],
    )
    started = time.perf_counter()
    with connection.execute_wrapper(counter):
        worker.run()
    seconds = time.perf_counter() - started
    sent = Message.objects.filter(status="sent").count()
    print(
        json.dumps(
            {"accept": accepted["queries"], "drain": counter.as_dict(), "sent": sent, "seconds": seconds}
        )
    )


def role_anymail(args) -> None:
    """The Anymail SendGrid backend alone: one connection, n sends in a loop, no database."""
    import warnings

    import django
    from django.conf import settings

    warnings.simplefilter("ignore")
    settings.configure(
        INSTALLED_APPS=["anymail"],
        ANYMAIL={"SENDGRID_API_KEY": "bench-key", "SENDGRID_API_URL": args.url},
        EMAIL_BACKEND="anymail.backends.sendgrid.EmailBackend",
        LOGGING_CONFIG=None,
    )
    django.setup()
    from anymail.backends.sendgrid import EmailBackend
    from django.core.mail import EmailMessage

    emails = [
        EmailMessage(subject=f["subject"], body=f["text"], from_email=FROM, to=[f["to"]])
        for f in map(message_fields, range(args.n))
    ]
    backend = EmailBackend()
    started = time.perf_counter()
    backend.open()
    sent = 0
    for email in emails:
        sent += backend.send_messages([email])
    backend.close()
    done = time.monotonic()
    print(json.dumps({"seconds": time.perf_counter() - started, "sent": sent, "done": done}))


def role_po_migrate(args) -> None:
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    import anymail
    import post_office

    print(
        json.dumps(
            {
                "post_office": _version("django-post-office"),
                "anymail": anymail.__version__,
                "django": django.get_version(),
                "po_module": post_office.__name__,
            }
        )
    )


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


def _po_accept(n: int, count_first: int = 20) -> dict:
    from django.db import connection
    from post_office import mail

    fields = [message_fields(i) for i in range(n)]
    counter = QueryCounter()
    started = time.perf_counter()
    with connection.execute_wrapper(counter):
        for f in fields[:count_first]:
            mail.send(recipients=[f["to"]], sender=FROM, subject=f["subject"], message=f["text"])
    for f in fields[count_first:]:
        mail.send(recipients=[f["to"]], sender=FROM, subject=f["subject"], message=f["text"])
    return {
        "seconds": time.perf_counter() - started,
        "queries": counter.as_dict(),
        "counted": min(count_first, n),
    }


def role_po_accept(args) -> None:
    import django

    django.setup()
    print(json.dumps(_po_accept(args.n)))


def role_po_queries(args) -> None:
    """Accept n messages, then `send_queued_mail`'s loop in this process, counting statements
    (its sending threads do not touch the database)."""
    import django

    django.setup()
    from django.db import connection
    from post_office.mail import send_queued_mail_until_done
    from post_office.models import STATUS, Email

    accepted = _po_accept(args.n, count_first=args.n)
    counter = QueryCounter()
    with connection.execute_wrapper(counter):
        send_queued_mail_until_done(args.lockfile, 1)
    print(
        json.dumps(
            {
                "accept": accepted["queries"],
                "drain": counter.as_dict(),
                "sent": Email.objects.filter(status=STATUS.sent).count(),
            }
        )
    )


ROLES = {
    "smtest-migrate": role_smtest_migrate,
    "smtest-accept": role_smtest_accept,
    "smtest-queries": role_smtest_queries,
    "anymail": role_anymail,
    "po-migrate": role_po_migrate,
    "po-accept": role_po_accept,
    "po-queries": role_po_queries,
}


# The parent: processes, databases, timing ---------------------------------------------------


class Bench:
    def __init__(self, args) -> None:
        self.args = args
        self.workdir = Path(tempfile.mkdtemp(prefix="smtest-bench-delivery-"))
        self.procs: list[subprocess.Popen] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v3/"
        self.server = None
        self.po_python: Path | None = None
        self.po_dir = self.workdir / "po_project"
        self.versions: dict[str, str] = {}
        self.load_before = (
            " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").exists() else "?"
        )

    # processes

    def start_server(self) -> None:
        import multiprocessing

        self.server = multiprocessing.get_context("fork").Process(
            target=serve, args=(self.port,), daemon=True
        )
        self.server.start()
        wait_for_port(self.port)

    def stop_all(self) -> None:
        for proc in self.procs:
            stop(proc)
        if self.server is not None and self.server.is_alive():
            self.server.terminate()
            self.server.join(5)
            if self.server.is_alive():
                self.server.kill()
                self.server.join(5)

    def run_role(self, python: Path, role: str, env: dict, cwd: Path, timeout: float, *extra: str) -> dict:
        log = open(self.workdir / f"{role}.log", "ab")
        proc = subprocess.Popen(
            [str(python), str(Path(__file__).resolve()), "--role", role, *extra],
            env=env,
            cwd=str(cwd),
            stdout=subprocess.PIPE,
            stderr=log,
            start_new_session=True,
        )
        self.procs.append(proc)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop(proc)
            raise RuntimeError(f"{role} took longer than {timeout:.0f} s (log: {log.name})")
        finally:
            log.close()
        if proc.returncode != 0:
            raise RuntimeError(
                f"{role} failed with {proc.returncode}; log: {log.name}\n"
                + Path(log.name).read_text()[-3000:]
            )
        return json.loads(out.decode().strip().splitlines()[-1])

    def reset_provider(self, latency_ms: float) -> None:
        control(self.port, "POST", "/_reset", {"latency": latency_ms / 1000})

    def provider_stats(self) -> dict:
        return control(self.port, "GET", "/_stats")

    # smtest

    def smtest_env(self, db: Path) -> dict:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("ANYMAIL_", "FIRST_WORKING_", "MAILSERVICE_"))
        }
        env.update(
            {
                "DJANGO_SETTINGS_MODULE": "smtest.settings",
                "PYTHONPATH": str(ROOT),
                "DATABASE_URL": f"sqlite:///{db}",
                # Workers share the failover memory and the pending wake-up through files, as
                # `make run` does (var/cache); each database gets its own, as a fresh deployment does.
                "CACHE_URL": f"filecache://{self.workdir / (db.stem + '-cache')}",
                "TASKS_BACKEND": "database",
                "FIRST_WORKING_EMAIL_BACKENDS": "sendgrid",
                "ANYMAIL_SENDGRID_API_KEY": "bench-key",
                "ANYMAIL_SENDGRID_API_URL": self.url,
                "ANYMAIL_WEBHOOK_SECRET": "bench:secret",
                "SECRET_KEY": "bench-" + "k" * 50,  # required with DEBUG off
                # As a production worker runs: DEBUG off (no per-query log in memory), INFO logs.
                "DEBUG": "0",
                "LOG_LEVEL": "INFO",
                "PYTHONWARNINGS": "ignore",
            }
        )
        return env

    def smtest_prepare(self) -> None:
        template = self.workdir / "smtest-template.sqlite3"
        self.run_role(Path(sys.executable), "smtest-migrate", self.smtest_env(template), ROOT, 300)
        self.smtest_template = template

    def fresh_db(self, template: Path, name: str) -> Path:
        db = self.workdir / f"{name}.sqlite3"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        shutil.copyfile(template, db)
        return db

    def smtest_run(
        self, n: int, workers: int, latency_ms: float, checkpoints=(), concurrency: int | None = None
    ) -> dict:
        tag = f"-c{concurrency}" if concurrency else ""
        db = self.fresh_db(self.smtest_template, f"smtest-{n}-{workers}w{tag}-{latency_ms:g}ms")
        env = self.smtest_env(db)
        if concurrency:
            env["MAILSERVICE_SEND_CONCURRENCY"] = str(concurrency)
        accept = self.run_role(Path(sys.executable), "smtest-accept", env, ROOT, 60 + n * 0.05, "--n", str(n))
        argv = [
            sys.executable,
            "manage.py",
            "db_worker",
            "--interval",
            "0.5",
            "--no-reload",
            "--no-startup-delay",
        ]
        drain = self.drain(
            [argv] * workers,
            env,
            ROOT,
            db,
            n,
            latency_ms,
            done_sql="SELECT COUNT(*) FROM mailservice_message WHERE status NOT IN ('queued', 'sending')",
            ok_sql="SELECT COUNT(*) FROM mailservice_message WHERE status = 'sent'",
            exits_by_itself=False,
            checkpoints=checkpoints,
            label=f"smtest-{workers}w{tag}",
        )
        return {"accept": accept, **drain}

    # post-office

    def po_prepare(self) -> None:
        venv = self.workdir / "po-venv"
        print(f"installing {POST_OFFICE_REQUIREMENT} into a throwaway virtualenv ({venv}) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        self.po_python = venv / "bin" / "python"
        pip = [
            str(self.po_python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            POST_OFFICE_REQUIREMENT,
            "django==5.2.*",
            f"django-anymail=={self.versions['anymail']}",
        ]
        result = subprocess.run(pip, timeout=600, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError("pip install failed:\n" + result.stdout[-2000:] + result.stderr[-2000:])
        package = self.po_dir / "bench_po"
        package.mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "settings.py").write_text(
            textwrap.dedent(f"""\
            import os
            SECRET_KEY = "bench"
            DEBUG = False
            USE_TZ = True
            INSTALLED_APPS = ["django.contrib.contenttypes", "anymail", "post_office"]
            DATABASES = {{"default": {{"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["PO_DB"],
                                      "OPTIONS": {SQLITE_OPTIONS!r}}}}}
            DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
            TEMPLATES = [{{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}}]
            CACHES = {{"default": {{"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}}}
            EMAIL_BACKEND = "post_office.EmailBackend"
            # Every other post-office setting is its default: BATCH_SIZE 100, THREADS_PER_PROCESS 5,
            # LOG_LEVEL 2 (a Log row per sent email), DEFAULT_PRIORITY medium (queued).
            POST_OFFICE = {{"BACKENDS": {{"default": "anymail.backends.sendgrid.EmailBackend"}}}}
            ANYMAIL = {{"SENDGRID_API_KEY": "bench-key", "SENDGRID_API_URL": {self.url!r}}}
            DEFAULT_FROM_EMAIL = {FROM!r}
            LOGGING_CONFIG = None
            """)
        )
        (self.po_dir / "manage.py").write_text(
            textwrap.dedent("""\
            import os, sys
            os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench_po.settings")
            from django.core.management import execute_from_command_line
            execute_from_command_line(sys.argv)
            """)
        )
        template = self.workdir / "po-template.sqlite3"
        info = self.run_role(self.po_python, "po-migrate", self.po_env(template), self.po_dir, 300)
        self.versions["post-office"] = info["post_office"]
        self.versions["post-office's Anymail"] = info["anymail"]
        self.versions["post-office's Django"] = info["django"]
        self.po_template = template

    def po_env(self, db: Path) -> dict:
        env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH")}
        env.update(
            {
                "DJANGO_SETTINGS_MODULE": "bench_po.settings",
                "PYTHONPATH": str(self.po_dir),
                "PO_DB": str(db),
                "PYTHONWARNINGS": "ignore",
            }
        )
        return env

    def po_run(self, n: int, processes: int, latency_ms: float) -> dict:
        db = self.fresh_db(self.po_template, f"po-{n}-{processes}p-{latency_ms:g}ms")
        env = self.po_env(db)
        accept = self.run_role(self.po_python, "po-accept", env, self.po_dir, 60 + n * 0.05, "--n", str(n))
        argv = [
            str(self.po_python),
            "manage.py",
            "send_queued_mail",
            "--processes",
            str(processes),
            "--lockfile",
            str(self.workdir / "post_office"),
        ]
        drain = self.drain(
            [argv],
            env,
            self.po_dir,
            db,
            n,
            latency_ms,
            done_sql="SELECT COUNT(*) FROM post_office_email WHERE status NOT IN (2, 3)",  # 2 queued, 3 requeued
            ok_sql="SELECT COUNT(*) FROM post_office_email WHERE status = 0",  # 0 sent
            exits_by_itself=True,
            label=f"post-office-{processes}p",
        )
        return {"accept": accept, **drain}

    # Anymail alone

    def anymail_run(self, n: int, latency_ms: float) -> dict:
        self.reset_provider(latency_ms)
        result = self.run_role(
            Path(sys.executable),
            "anymail",
            {**os.environ, "PYTHONWARNINGS": "ignore"},
            ROOT,
            60 + n * (latency_ms / 1000 + 0.05),
            "--n",
            str(n),
            "--url",
            self.url,
        )
        stats = self.provider_stats()
        assert stats["count"] == n == result["sent"], (stats, result)
        return {
            "drain_seconds": result["done"] - stats["first"],
            "loop_seconds": result["seconds"],
            "provider": stats,
        }

    # the drain, common to smtest and post-office

    def drain(
        self, argvs, env, cwd, db, n, latency_ms, *, done_sql, ok_sql, exits_by_itself, label, checkpoints=()
    ) -> dict:
        self.reset_provider(latency_ms)
        timeout = 60 + n * 0.5  # a bound, far above any expected drain (2 msg/s)
        poll = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10, isolation_level=None)
        logs = [open(self.workdir / f"{label}-{i}.log", "ab") for i in range(len(argvs))]
        started = time.monotonic()
        procs = [
            subprocess.Popen(
                argv, env=env, cwd=str(cwd), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
            for argv, log in zip(argvs, logs)
        ]
        self.procs.extend(procs)
        rss_at: dict[int, list[dict]] = {}
        pending = sorted(checkpoints)
        try:
            while True:
                done = poll.execute(done_sql).fetchone()[0]
                while pending and done >= pending[0]:
                    rss_at[pending.pop(0)] = [memory(p.pid) for p in procs]
                if done >= n:
                    break
                if not exits_by_itself and any(p.poll() is not None for p in procs):
                    raise RuntimeError(f"{label}: a worker exited before the drain finished ({done}/{n})")
                if exits_by_itself and all(p.poll() is not None for p in procs):
                    done = poll.execute(done_sql).fetchone()[0]
                    if done >= n:
                        break
                    raise RuntimeError(f"{label}: exited with {done}/{n} messages done")
                if time.monotonic() - started > timeout:
                    raise RuntimeError(f"{label}: not drained after {timeout:.0f} s ({done}/{n})")
                time.sleep(POLL)
            finished = time.monotonic()
            peak = [memory(p.pid) for p in procs]
            if exits_by_itself:
                for p in procs:
                    try:
                        p.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        pass
            ok = poll.execute(ok_sql).fetchone()[0]
        finally:
            for p in procs:
                stop(p)
            for log in logs:
                log.close()
            poll.close()
        stats = self.provider_stats()
        if ok != n or stats["count"] != n:
            raise RuntimeError(f"{label}: {ok} of {n} sent, the provider saw {stats['count']} requests")
        return {
            "drain_seconds": finished
            - stats["first"],  # the first provider request → the last message recorded
            "wall_seconds": finished - started,  # process start → the last message recorded
            "peak": peak,
            "rss_at": rss_at,
            "provider": stats,
        }


def memory(pid: int) -> dict:
    """VmHWM (peak) and VmRSS of a live process, in kB; {} once it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return {k: int(v) for k, v in re.findall(r"^(VmHWM|VmRSS):\s+(\d+) kB", text, re.M)}


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process group (a worker finishes its task), SIGKILL after 10 s."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


# Reporting ------------------------------------------------------------------------------------


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def mb(kb: int | None) -> str:
    return f"{kb / 1024:.0f} MB" if kb else "?"


def report(bench: Bench, results: dict, args, elapsed: float) -> tuple[str, list[str]]:
    n = args.messages
    lat = args.latencies
    lines: list[str] = []
    v = bench.versions
    po_django, po_anymail = v.get("post-office's Django", "?"), v.get("post-office's Anymail", "?")
    header = (
        f"{datetime.date.today().isoformat()}, commit {v.get('commit', '?')}; {os.cpu_count()} cores "
        f"({platform.processor() or platform.machine()}), Linux {platform.release()}; Python {platform.python_version()}, "
        f"Django {v['django']}, Anymail {v['anymail']}, django-tasks {v.get('django-tasks', '?')}, "
        f"django-tasks-db {v.get('django-tasks-db', '?')}; django-post-office {v.get('post-office', '?')} "
        f"(its own virtualenv: Django {po_django}, Anymail {po_anymail}); "
        f"SQLite {sqlite3.sqlite_version} (WAL, synchronous=NORMAL, IMMEDIATE transactions, for both); "
        f"N = {n} messages; load average before the run {bench.load_before}; the whole run took {elapsed / 60:.1f} min."
    )
    lines.append(header)
    lines.append("")

    def cell(key, regime, field="drain_seconds", count=n):
        r = results.get((key, regime))
        return rate(count, r[field]) if r else None

    def fmt(x):
        return "—" if x is None else f"{x:,.0f}" if x >= 100 else f"{x:,.1f}"

    def ratio(a, b):
        return "—" if a is None or b is None else f"{a / b:.2f}×"

    regimes = [f"{ms:g} ms" for ms in lat]
    names = {0: "loopback (0 ms)"}
    head = (
        "| drain, msg/s | " + " | ".join(names.get(ms, f"provider answers in {ms:g} ms") for ms in lat) + " |"
    )
    lines += [head, "|---" * (len(lat) + 1) + "|"]
    rows = [
        ("smtest, 1 `db_worker`", "smtest-1w"),
        ("smtest, 2 `db_worker` processes", "smtest-2w"),
        (
            "smtest, 1 `db_worker`, `MAILSERVICE_SEND_CONCURRENCY=8` (a lower ceiling; default 32)",
            "smtest-1w-c8",
        ),
        ("post-office `send_queued_mail`, 1 process (its default 5 threads)", "po-1p"),
        ("post-office `send_queued_mail --processes 2`", "po-2p"),
        ("Anymail backend alone, one connection", "anymail"),
    ]
    for label, key in rows:
        lines.append(f"| {label} | " + " | ".join(fmt(cell(key, r)) for r in regimes) + " |")
    lines.append("")
    lines.append(
        "Drain = N / (the provider's first request → the last message recorded as sent, polled every "
        f"{POLL * 1000:.0f} ms); process start-up is left out. Including it (process start → last "
        "recorded), msg/s:"
    )
    lines.append("")
    lines += [
        "| drain incl. start-up, msg/s | " + " | ".join(names.get(ms, f"{ms:g} ms") for ms in lat) + " |",
        "|---" * (len(lat) + 1) + "|",
    ]
    for label, key in rows[:5]:
        lines.append(f"| {label} | " + " | ".join(fmt(cell(key, r, "wall_seconds")) for r in regimes) + " |")
    lines.append("")

    lines += [
        "| ratios | " + " | ".join(names.get(ms, f"{ms:g} ms") for ms in lat) + " | goal |",
        "|---" * (len(lat) + 2) + "|",
    ]
    goals = {
        "smtest 1 worker / post-office 1 process": ("po-1p", "≥ 1.0× loopback (must); ≥ 2× at 50 ms"),
        "smtest 1 worker / Anymail alone": ("anymail", "≥ 0.8× loopback"),
    }
    for label, (other, goal) in goals.items():
        lines.append(
            f"| {label} | "
            + " | ".join(ratio(cell("smtest-1w", r), cell(other, r)) for r in regimes)
            + f" | {goal} |"
        )
    lines.append(
        "| smtest 1 worker at ceiling 8 / post-office 1 process | "
        + " | ".join(ratio(cell("smtest-1w-c8", r), cell("po-1p", r)) for r in regimes)
        + " | |"
    )
    lines.append(
        "| smtest 2 workers / 1 worker | "
        + " | ".join(ratio(cell("smtest-2w", r), cell("smtest-1w", r)) for r in regimes)
        + " | ≥ 1.7× at 50 ms |"
    )
    lines.append(
        "| smtest 2 workers / post-office 2 processes | "
        + " | ".join(ratio(cell("smtest-2w", r), cell("po-2p", r)) for r in regimes)
        + " | |"
    )
    lines.append(
        "| post-office 2 processes / 1 | "
        + " | ".join(ratio(cell("po-2p", r), cell("po-1p", r)) for r in regimes)
        + " | |"
    )
    lines.append("")

    def accept_rates(prefix):
        values = [
            rate(n, res["accept"]["seconds"])
            for key, res in results.items()
            if isinstance(key, tuple) and key[0].startswith(prefix)
        ]
        return values

    sa, pa = accept_rates("smtest-"), accept_rates("po-")
    if sa and pa:
        sm, pm = statistics.median(sa), statistics.median(pa)
        lines += [
            "| accept, msg/s (median of the runs; range) | |",
            "|---|---|",
            f"| smtest: `check_message` + `message_accept` (the API's service call, no HTTP) | {sm:,.0f} ({min(sa):,.0f}–{max(sa):,.0f}) |",
            f"| post-office: `mail.send()` | {pm:,.0f} ({min(pa):,.0f}–{max(pa):,.0f}) |",
            f"| ratio smtest / post-office (goal ≥ 1.0×) | {sm / pm:.2f}× |",
            "",
        ]

    q = results.get("queries")
    if q:
        sq, pq = q["smtest"], q.get("post-office")
        qn = args.query_messages

        def per(d):
            return d["total"] / qn

        def begins(d):
            return d["kinds"].get("BEGIN", 0) / qn

        lines += [
            "| statements per message (in-process, counted with `connection.execute_wrapper`, "
            f"{qn} messages, loopback) | smtest | post-office |",
            "|---|---|---|",
        ]
        lines.append(
            f"| accept | {per(sq['accept']):.1f} ({begins(sq['accept']):.1f} BEGIN) | "
            + (f"{per(pq['accept']):.1f} ({begins(pq['accept']):.1f} BEGIN)" if pq else "—")
            + " |"
        )
        lines.append(
            f"| drain, all statements, queue included | {per(sq['drain']):.1f} ({begins(sq['drain']):.1f} BEGIN) | "
            + (f"{per(pq['drain']):.2f} ({begins(pq['drain']):.2f} BEGIN)" if pq else "—")
            + " |"
        )
        lines.append(f"| of which the task queue (django_tasks_db) | {sq['drain']['queue'] / qn:.1f} | — |")
        lines.append(
            f"| drain, by kind | {kinds(sq['drain'], qn)} | " + (kinds(pq["drain"], qn) if pq else "—") + " |"
        )
        lines.append("")

    rss = results.get("rss")
    if rss:
        lines += [
            f"| smtest worker memory, 1 `db_worker`, loopback, {rss['n']:,} messages | VmHWM (peak) | VmRSS |",
            "|---|---|---|",
        ]
        for at, mems in sorted(rss["rss_at"].items()):
            m = mems[0] if mems else {}
            lines.append(f"| after {at:,} messages | {mb(m.get('VmHWM'))} | {mb(m.get('VmRSS'))} |")
        first, last = min(rss["rss_at"]), max(rss["rss_at"])
        a, b = rss["rss_at"][first][0].get("VmHWM"), rss["rss_at"][last][0].get("VmHWM")
        if a and b:
            lines.append(
                f"| peak growth {first:,} → {last:,} (goal: flat) | {(b - a) / 1024:+.1f} MB ({b / a - 1:+.1%}) | |"
            )
        lines.append(
            f"| drain rate over the {rss['n']:,} messages | {rate(rss['n'], rss['drain_seconds']):,.1f} msg/s | |"
        )
        lines.append("")
    peaks = []
    for (key, regime), res in sorted((k, r) for k, r in results.items() if isinstance(k, tuple)):
        if "peak" in res and res["peak"]:
            peaks.append(f"{key} {regime}: " + ", ".join(mb(p.get("VmHWM")) for p in res["peak"]))
    if peaks:
        lines.append("Peak RSS (VmHWM) of each drain process after N messages: " + "; ".join(peaks) + ".")
        lines.append("")
    return header, lines


def kinds(d: dict, n: int) -> str:
    return ", ".join(f"{k} {c / n:.2f}" for k, c in sorted(d["kinds"].items(), key=lambda kv: -kv[1]))


def versions() -> dict:
    from importlib.metadata import version

    found = {"django": version("django"), "anymail": version("django-anymail")}
    for dist in ("django-tasks", "django-tasks-db"):
        try:
            found[dist] = version(dist)
        except Exception:
            pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        found["commit"] = commit + (" (with uncommitted changes)" if dirty else "")
    except Exception:
        pass
    return found


BEGIN_MARK = "<!-- bench/delivery.py results: newest last; `--write-docs` adds one before the end mark -->"
END_MARK = "<!-- bench/delivery.py results: end -->"


def write_docs(lines: list[str], command: str) -> None:
    text = DOCS.read_text()
    if BEGIN_MARK not in text or END_MARK not in text:
        raise SystemExit(f"{DOCS} has no bench/delivery.py results marks; add the section first")
    block = (
        "\n".join(
            [f"### Run of {datetime.date.today().isoformat()}", "", f"`{command}`", "", *lines]
        ).rstrip()
        + "\n\n"
    )
    before, after = text.split(END_MARK, 1)
    DOCS.write_text(before + block + END_MARK + after)
    print(f"results added to {DOCS.relative_to(ROOT)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--messages", type=int, default=None, help="N per contender and regime (default 1000; --quick 200)"
    )
    parser.add_argument(
        "--latency-ms", default="0,50", help="provider answer delays, comma-separated (default 0,50)"
    )
    parser.add_argument(
        "--rss-messages",
        type=int,
        default=None,
        help="messages in the smtest worker memory run (default 10000; --quick 1000; 0 skips)",
    )
    parser.add_argument(
        "--query-messages", type=int, default=200, help="messages in the statement count (0 skips)"
    )
    parser.add_argument("--quick", action="store_true", help="small N: about two minutes")
    parser.add_argument("--write-docs", action="store_true", help="add the tables to docs/benchmarks.md")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (databases, logs)")
    parser.add_argument("--role", choices=sorted(ROLES), help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--lockfile", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        ROLES[args.role](args)
        return

    args.messages = args.messages or (200 if args.quick else 1000)
    if args.rss_messages is None:
        args.rss_messages = 1000 if args.quick else 10000
    if args.quick:
        args.query_messages = min(args.query_messages, 100)
    args.latencies = [float(x) for x in args.latency_ms.split(",") if x.strip()]
    n = args.messages
    command = "bench/delivery.py " + " ".join(sys.argv[1:])

    begun = time.monotonic()
    bench = Bench(args)
    bench.versions.update(versions())
    results: dict = {}
    interrupted = False
    try:
        bench.start_server()
        print(f"local provider on {bench.url}; work directory {bench.workdir}", flush=True)
        bench.smtest_prepare()
        bench.po_prepare()

        def step(label, fn):
            t = time.monotonic()
            print(f"  {label} ...", end=" ", flush=True)
            value = fn()
            shown = (
                f" (drain {rate(value['n'] if 'n' in value else n, value['drain_seconds']):,.1f} msg/s)"
                if "drain_seconds" in value
                else ""
            )
            print(f"{time.monotonic() - t:.1f} s{shown}", flush=True)
            return value

        for ms in args.latencies:
            regime = f"{ms:g} ms"
            print(f"provider latency {regime}, N = {n}:", flush=True)
            results[("anymail", regime)] = step("Anymail alone", lambda: bench.anymail_run(n, ms))
            for p in (1, 2):
                results[(f"po-{p}p", regime)] = step(
                    f"post-office, {p} process(es)", lambda: bench.po_run(n, p, ms)
                )
            for w in (1, 2):
                results[(f"smtest-{w}w", regime)] = step(
                    f"smtest, {w} worker(s)", lambda: bench.smtest_run(n, w, ms)
                )
            results[("smtest-1w-c8", regime)] = step(
                "smtest, 1 worker, MAILSERVICE_SEND_CONCURRENCY=8",
                lambda: bench.smtest_run(n, 1, ms, concurrency=8),
            )
        if args.query_messages:
            qn = args.query_messages

            def queries():
                bench.reset_provider(0)
                smtest_db = bench.fresh_db(bench.smtest_template, "smtest-queries")
                sq = bench.run_role(
                    Path(sys.executable),
                    "smtest-queries",
                    bench.smtest_env(smtest_db),
                    ROOT,
                    60 + qn,
                    "--n",
                    str(qn),
                )
                po_db = bench.fresh_db(bench.po_template, "po-queries")
                pq = bench.run_role(
                    bench.po_python,
                    "po-queries",
                    bench.po_env(po_db),
                    bench.po_dir,
                    60 + qn,
                    "--n",
                    str(qn),
                    "--lockfile",
                    str(bench.workdir / "post_office_q"),
                )
                assert sq["sent"] == qn and pq["sent"] == qn, (sq["sent"], pq["sent"])
                return {"smtest": sq, "post-office": pq}

            results["queries"] = step(f"statements per message ({qn} messages, in-process)", queries)
        if args.rss_messages:
            rn = args.rss_messages
            marks = sorted({m for m in (1000, 2500, 5000, rn // 2, rn) if 0 < m <= rn})
            results["rss"] = step(
                f"smtest worker memory, {rn} messages, loopback",
                lambda: {**bench.smtest_run(rn, 1, 0.0, checkpoints=marks), "n": rn},
            )
    except KeyboardInterrupt:
        interrupted = True
    except BaseException:
        args.keep = True  # the databases and logs, to see what went wrong
        print(f"\nfailed; logs and databases kept in {bench.workdir}", file=sys.stderr)
        raise
    finally:
        bench.stop_all()
        if not args.keep:
            shutil.rmtree(bench.workdir, ignore_errors=True)
    if interrupted:
        raise SystemExit("interrupted; every process stopped")

    elapsed = time.monotonic() - begun
    if args.keep:
        (bench.workdir / "results.json").write_text(
            json.dumps(
                {" / ".join(k) if isinstance(k, tuple) else k: v for k, v in results.items()},
                indent=1,
                default=str,
            )
        )
    _, lines = report(bench, results, args, elapsed)
    print()
    print("\n".join(lines))
    if args.write_docs:
        write_docs(lines, command)


if __name__ == "__main__":
    main()
