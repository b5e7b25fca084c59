"""Delivery at volume: smtest's outbox and worker against django-post-office and the Anymail backend alone.

All three send to one local ESP (tests/esp_server.py, in its own process, 127.0.0.1), which
answers 202 at once or after a set latency (a real ESP takes tens of milliseconds), with the same
N messages, their SQLite files in temporary directories:

- **smtest**: a temporary database (`DATABASE_URL`), the database task queue, the failover chain
  `sendgrid` pointed at the local server. N messages are accepted through the service call the
  API uses (`check_message` + `message_accept`), then `manage.py db_worker` processes (1, then 2)
  drain the outbox until every message is `sent`.
- **django-post-office**: installed by this script into a throwaway virtualenv (never a project
  dependency), in a tiny generated project with the same SQLite options; `mail.send()` N times,
  then `manage.py send_queued_mail` (1 process with its default 5 threads, then `--processes 2`).
- **the Anymail SendGrid backend alone**, one connection, N sends in a loop, no database: the limit.

Run: .venv/bin/python bench/delivery.py [--messages 1000] [--latency-ms 0,50] [--rss-messages 10000]
                                        [--query-messages 200] [--quick] [--keep]
It prints its tables in markdown, for docs/benchmarks.md.
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
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# The same SQLite options smtest uses, for both databases, so the comparison is between the
# designs, not the database tuning.
from smtest.environment import SQLITE_OPTIONS  # noqa: E402
from tests.esp_server import ProviderProcess  # noqa: E402

POST_OFFICE_REQUIREMENT = "django-post-office==3.12.*"
FROM = "bench@example.com"
TEXT = "Hello, this is a benchmark message from the delivery benchmark. " * 4  # about 260 characters
POLL = 0.025  # seconds between database polls while a drain runs


def message_fields(i: int) -> dict[str, str]:
    return {"to": f"rcpt{i}@example.net", "subject": f"Bench message {i}", "text": TEXT}


def smtest_env(db: Path, *, cache: Path, provider_url: str) -> dict:
    """The environment of an smtest process on the SQLite file `db`, as a production worker runs:
    settings from the environment alone, DEBUG off, INFO logs, the database task queue, and the
    failover chain `sendgrid` pointed at `provider_url`. Variables of the caller's own that would
    configure the gateway are left out."""
    foreign = ("ANYMAIL_", "FIRST_WORKING_", "MAILSERVICE_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(foreign)}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "smtest.settings",
            "PYTHONPATH": str(ROOT),
            "DATABASE_URL": f"sqlite:///{db}",
            # Workers share the failover memory and the pending wake-up through files, as
            # `make run` does (var/cache); each database gets its own, as a fresh deployment does.
            "CACHE_URL": f"filecache://{cache}",
            "TASKS_BACKEND": "database",
            "FIRST_WORKING_EMAIL_BACKENDS": "sendgrid",
            "ANYMAIL_SENDGRID_API_KEY": "bench-key",
            "ANYMAIL_SENDGRID_API_URL": provider_url,
            "ANYMAIL_WEBHOOK_SECRET": "bench:secret",
            "SECRET_KEY": "bench-" + "k" * 50,  # required with DEBUG off
            # As a production worker runs: DEBUG off (no per-query log in memory), INFO logs.
            "DEBUG": "0",
            "LOG_LEVEL": "INFO",
            "PYTHONWARNINGS": "ignore",
        }
    )
    return env


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
    drain = counter.as_dict()
    print(json.dumps({"accept": accepted["queries"], "drain": drain, "sent": sent, "seconds": seconds}))


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
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "queries": counter.as_dict(), "counted": min(count_first, n)}


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
        self.provider: ProviderProcess | None = None
        self.url = ""  # the provider's SendGrid API URL, once it runs
        self.po_python: Path | None = None
        self.po_dir = self.workdir / "po_project"
        self.versions: dict[str, str] = {}
        self.load_before = " ".join(f"{load:.2f}" for load in os.getloadavg())

    # processes

    def start_provider(self) -> None:
        self.provider = ProviderProcess()  # SendGrid's send API on any path
        self.url = f"{self.provider.url}/v3/"

    def stop_all(self) -> None:
        for proc in self.procs:
            stop(proc)
        if self.provider is not None:
            self.provider.close()

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
            raise RuntimeError(f"{role} took longer than {timeout:.0f} s (log: {log.name})") from None
        finally:
            log.close()
        if proc.returncode != 0:
            raise RuntimeError(
                f"{role} failed with {proc.returncode}; log: {log.name}\n"
                + Path(log.name).read_text()[-3000:]
            )
        return json.loads(out.decode().strip().splitlines()[-1])

    def reset_provider(self, latency_ms: float) -> None:
        self.provider.reset(latency_ms / 1000)

    def provider_stats(self) -> dict:
        return self.provider.stats()

    # smtest

    def smtest_env(self, db: Path) -> dict:
        return smtest_env(db, cache=self.workdir / (db.stem + "-cache"), provider_url=self.url)

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
            # 2 queued, 3 requeued
            done_sql="SELECT COUNT(*) FROM post_office_email WHERE status NOT IN (2, 3)",
            ok_sql="SELECT COUNT(*) FROM post_office_email WHERE status = 0",  # 0 sent
            exits_by_itself=True,
            label=f"post-office-{processes}p",
        )
        return {"accept": accept, **drain}

    # Anymail alone

    def anymail_run(self, n: int, latency_ms: float) -> dict:
        self.reset_provider(latency_ms)
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        result = self.run_role(
            Path(sys.executable),
            "anymail",
            env,
            ROOT,
            60 + n * (latency_ms / 1000 + 0.05),
            "--n",
            str(n),
            "--url",
            self.url,
        )
        stats = self.provider_stats()
        if not stats["count"] == n == result["sent"]:
            raise RuntimeError(f"Anymail alone: {result['sent']} of {n} sent; the provider got {stats}")
        return {
            "n": n,
            "drain_seconds": result["done"] - stats["first"],
            "loop_seconds": result["seconds"],
            "provider": stats,
        }

    # statements per message, both in-process

    def queries_run(self, n: int) -> dict:
        self.reset_provider(0)
        smtest_db = self.fresh_db(self.smtest_template, "smtest-queries")
        sq = self.run_role(
            Path(sys.executable), "smtest-queries", self.smtest_env(smtest_db), ROOT, 60 + n, "--n", str(n)
        )
        po_db = self.fresh_db(self.po_template, "po-queries")
        pq = self.run_role(
            self.po_python,
            "po-queries",
            self.po_env(po_db),
            self.po_dir,
            60 + n,
            "--n",
            str(n),
            "--lockfile",
            str(self.workdir / "post_office_q"),
        )
        if sq["sent"] != n or pq["sent"] != n:
            raise RuntimeError(f"statement count: smtest sent {sq['sent']}, post-office {pq['sent']} of {n}")
        return {"smtest": sq, "post-office": pq}

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
            for argv, log in zip(argvs, logs, strict=True)
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
            "n": n,
            # the first provider request → the last message recorded
            "drain_seconds": finished - stats["first"],
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

# The drain tables' rows: (label, result key); the start-up table leaves out the last one.
DRAINS = [
    ("smtest, 1 `db_worker`", "smtest-1w"),
    ("smtest, 2 `db_worker` processes", "smtest-2w"),
    ("smtest, 1 `db_worker`, `MAILSERVICE_SEND_CONCURRENCY=8` (a lower ceiling; default 32)", "smtest-1w-c8"),
    ("post-office `send_queued_mail`, 1 process (its default 5 threads)", "po-1p"),
    ("post-office `send_queued_mail --processes 2`", "po-2p"),
    ("Anymail backend alone, one connection", "anymail"),
]
# (label, numerator, denominator, goal)
RATIOS = [
    (
        "smtest 1 worker / post-office 1 process",
        "smtest-1w",
        "po-1p",
        "≥ 1.0× loopback (must); ≥ 2× at 50 ms",
    ),
    ("smtest 1 worker / Anymail alone", "smtest-1w", "anymail", "≥ 0.8× loopback"),
    ("smtest 1 worker at ceiling 8 / post-office 1 process", "smtest-1w-c8", "po-1p", ""),
    ("smtest 2 workers / 1 worker", "smtest-2w", "smtest-1w", "≥ 1.7× at 50 ms"),
    ("smtest 2 workers / post-office 2 processes", "smtest-2w", "po-2p", ""),
    ("post-office 2 processes / 1", "po-2p", "po-1p", ""),
]


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def mb(kb: int | None) -> str:
    return f"{kb / 1024:.0f} MB" if kb else "?"


def number(x: float | None) -> str:
    return "—" if x is None else f"{x:,.0f}" if x >= 100 else f"{x:,.1f}"


def markdown(head: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows] + [""]


def report(bench: Bench, results: dict, args, elapsed: float) -> list[str]:
    """The run as markdown: the header line, then one table per measurement."""
    lines = [header(bench, args.messages, elapsed), ""]
    lines += drain_tables(results, args.messages, args.latencies)
    lines += accept_table(results, args.messages)
    if "queries" in results:
        lines += statements_table(results["queries"], args.query_messages)
    if "rss" in results:
        lines += memory_table(results["rss"])
    return lines + peaks(results)


def header(bench: Bench, n: int, elapsed: float) -> str:
    v = bench.versions
    po_django, po_anymail = v.get("post-office's Django", "?"), v.get("post-office's Anymail", "?")
    return (
        f"{datetime.date.today().isoformat()}, commit {v.get('commit', '?')}; {os.cpu_count()} cores "
        f"({platform.processor() or platform.machine()}), Linux {platform.release()}; "
        f"Python {platform.python_version()}, Django {v['django']}, Anymail {v['anymail']}, "
        f"django-tasks {v.get('django-tasks', '?')}, django-tasks-db {v.get('django-tasks-db', '?')}; "
        f"django-post-office {v.get('post-office', '?')} (its own virtualenv: "
        f"Django {po_django}, Anymail {po_anymail}); "
        f"SQLite {sqlite3.sqlite_version} (WAL, synchronous=NORMAL, IMMEDIATE transactions, for both); "
        f"N = {n} messages; load average before the run {bench.load_before}; "
        f"the whole run took {elapsed / 60:.1f} min."
    )


def drain_tables(results: dict, n: int, latencies: list[float]) -> list[str]:
    regimes = [f"{ms:g} ms" for ms in latencies]

    def rates(key: str, field: str) -> list[str]:
        return [number(rate(n, results[key, r][field]) if (key, r) in results else None) for r in regimes]

    def ratio(a: str, b: str, regime: str) -> str:
        if (a, regime) not in results or (b, regime) not in results:
            return "—"
        return f"{results[b, regime]['drain_seconds'] / results[a, regime]['drain_seconds']:.2f}×"

    loopback = {0: "loopback (0 ms)"}
    head = [loopback.get(ms, f"provider answers in {ms:g} ms") for ms in latencies]
    short = [loopback.get(ms, f"{ms:g} ms") for ms in latencies]
    drains = [[label, *rates(key, "drain_seconds")] for label, key in DRAINS]
    lines = markdown(["drain, msg/s", *head], drains)
    lines += [
        f"Drain = N / (the provider's first request → the last message recorded as sent, polled every "
        f"{POLL * 1000:.0f} ms); process start-up is left out. Including it (process start → last "
        "recorded), msg/s:",
        "",
    ]
    lines += markdown(
        ["drain incl. start-up, msg/s", *short],
        [[label, *rates(key, "wall_seconds")] for label, key in DRAINS[:-1]],
    )
    ratios = [[label, *(ratio(a, b, r) for r in regimes), goal] for label, a, b, goal in RATIOS]
    return lines + markdown(["ratios", *short, "goal"], ratios)


def accept_table(results: dict, n: int) -> list[str]:
    def rates(prefix: str) -> list[float]:
        return [
            rate(n, r["accept"]["seconds"])
            for k, r in results.items()
            if isinstance(k, tuple) and k[0].startswith(prefix)
        ]

    smtest, po = rates("smtest-"), rates("po-")
    if not smtest or not po:
        return []
    sm, pm = statistics.median(smtest), statistics.median(po)
    return markdown(
        ["accept, msg/s (median of the runs; range)", ""],
        [
            [
                "smtest: `check_message` + `message_accept` (the API's service call, no HTTP)",
                f"{sm:,.0f} ({min(smtest):,.0f}–{max(smtest):,.0f})",
            ],
            ["post-office: `mail.send()`", f"{pm:,.0f} ({min(po):,.0f}–{max(po):,.0f})"],
            ["ratio smtest / post-office (goal ≥ 1.0×)", f"{sm / pm:.2f}×"],
        ],
    )


def statements_table(queries: dict, n: int) -> list[str]:
    def per(d: dict, digits: int) -> str:
        return f"{d['total'] / n:.{digits}f} ({d['kinds'].get('BEGIN', 0) / n:.{digits}f} BEGIN)"

    def kinds(d: dict) -> str:
        return ", ".join(f"{k} {c / n:.2f}" for k, c in sorted(d["kinds"].items(), key=lambda kv: -kv[1]))

    sq, pq = queries["smtest"], queries["post-office"]
    head = (
        f"statements per message (in-process, counted with `connection.execute_wrapper`, {n} messages, "
        "loopback)"
    )
    return markdown(
        [head, "smtest", "post-office"],
        [
            ["accept", per(sq["accept"], 1), per(pq["accept"], 1)],
            ["drain, all statements, queue included", per(sq["drain"], 1), per(pq["drain"], 2)],
            ["of which the task queue (django_tasks_db)", f"{sq['drain']['queue'] / n:.1f}", "—"],
            ["drain, by kind", kinds(sq["drain"]), kinds(pq["drain"])],
        ],
    )


def memory_table(rss: dict) -> list[str]:
    n, at = rss["n"], rss["rss_at"]
    rows = [
        [f"after {m:,} messages", mb(at[m][0].get("VmHWM")), mb(at[m][0].get("VmRSS"))] for m in sorted(at)
    ]
    first, last = at[min(at)][0].get("VmHWM"), at[max(at)][0].get("VmHWM")
    if first and last:
        growth = f"{(last - first) / 1024:+.1f} MB ({last / first - 1:+.1%})"
        rows.append([f"peak growth {min(at):,} → {max(at):,} (goal: flat)", growth, ""])
    rows.append([f"drain rate over the {n:,} messages", f"{rate(n, rss['drain_seconds']):,.1f} msg/s", ""])
    head = f"smtest worker memory, 1 `db_worker`, loopback, {n:,} messages"
    return markdown([head, "VmHWM (peak)", "VmRSS"], rows)


def peaks(results: dict) -> list[str]:
    found = [
        f"{key} {regime}: " + ", ".join(mb(p.get("VmHWM")) for p in r["peak"])
        for (key, regime), r in sorted((k, r) for k, r in results.items() if isinstance(k, tuple))
        if r.get("peak")
    ]
    if not found:
        return []
    return ["Peak RSS (VmHWM) of each drain process after N messages: " + "; ".join(found) + ".", ""]


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


# The run ---------------------------------------------------------------------------------------


def step(label: str, measure, *args, **kwargs) -> dict:
    """measure(*args, **kwargs), its time and drain rate printed as it ends."""
    started = time.monotonic()
    print(f"  {label} ...", end=" ", flush=True)
    value = measure(*args, **kwargs)
    shown = ""
    if "drain_seconds" in value:
        shown = f" (drain {rate(value['n'], value['drain_seconds']):,.1f} msg/s)"
    print(f"{time.monotonic() - started:.1f} s{shown}", flush=True)
    return value


def run_all(bench: Bench, args) -> dict:
    """Every contender at every latency, then the statement count and the memory run."""
    n, results = args.messages, {}
    for ms in args.latencies:
        regime = f"{ms:g} ms"
        print(f"provider latency {regime}, N = {n}:", flush=True)
        results["anymail", regime] = step("Anymail alone", bench.anymail_run, n, ms)
        for p in (1, 2):
            results[f"po-{p}p", regime] = step(f"post-office, {p} process(es)", bench.po_run, n, p, ms)
        for w in (1, 2):
            results[f"smtest-{w}w", regime] = step(f"smtest, {w} worker(s)", bench.smtest_run, n, w, ms)
        results["smtest-1w-c8", regime] = step(
            "smtest, 1 worker, MAILSERVICE_SEND_CONCURRENCY=8", bench.smtest_run, n, 1, ms, concurrency=8
        )
    if args.query_messages:
        label = f"statements per message ({args.query_messages} messages, in-process)"
        results["queries"] = step(label, bench.queries_run, args.query_messages)
    if args.rss_messages:
        rn = args.rss_messages
        marks = sorted({m for m in (1000, 2500, 5000, rn // 2, rn) if 0 < m <= rn})
        label = f"smtest worker memory, {rn} messages, loopback"
        results["rss"] = step(label, bench.smtest_run, rn, 1, 0.0, checkpoints=marks)
    return results


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
        help="messages in the worker memory run (default 10000; --quick 1000; 0 skips)",
    )
    parser.add_argument(
        "--query-messages", type=int, default=200, help="messages in the statement count (0 skips)"
    )
    parser.add_argument("--quick", action="store_true", help="small N: about two minutes")
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

    begun = time.monotonic()
    bench = Bench(args)
    bench.versions.update(versions())
    try:
        bench.start_provider()
        print(f"local provider on {bench.url}; work directory {bench.workdir}", flush=True)
        bench.smtest_prepare()
        bench.po_prepare()
        results = run_all(bench, args)
    except KeyboardInterrupt:
        raise SystemExit("interrupted; every process stopped") from None
    except BaseException:
        args.keep = True  # the databases and logs, to see what went wrong
        print(f"\nfailed; logs and databases kept in {bench.workdir}", file=sys.stderr)
        raise
    finally:
        bench.stop_all()
        if not args.keep:
            shutil.rmtree(bench.workdir, ignore_errors=True)

    if args.keep:
        named = {" / ".join(k) if isinstance(k, tuple) else k: v for k, v in results.items()}
        (bench.workdir / "results.json").write_text(json.dumps(named, indent=1, default=str))
    print()
    print("\n".join(report(bench, results, args, time.monotonic() - begun)))


if __name__ == "__main__":
    main()
