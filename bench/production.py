"""The production stack end to end: issue 12's "Done when" run, on loopback.

Brings up what docs/deployment.md describes, each piece a real process configured through the
environment alone:

- throwaway PostgreSQL and Redis (tests/servers/real.py: a temporary directory, a free port,
  stopped and deleted at the end); `migrate` and `collectstatic` into a temporary STATIC_ROOT;
- gunicorn with deploy/gunicorn.conf.py, DEBUG off (TLS redirect and HSTS off: plain HTTP on
  loopback), the Redis cache, TASKS_BACKEND=rq, the failover chain `sendgrid` pointed at a local
  SendGrid-like provider that counts every request per message (tests/servers/provider.py);
- two RQ workers (`rqworker --job-class django_tasks_rq.Job --with-scheduler default`) and the
  recovery pass (`recover_messages --loop`), with a short lease so a killed worker's messages
  come back within the run;
- an API key from `manage.py create_api_key`.

Then N messages are posted through `POST /api/messages` by several client threads over HTTP; once
the provider has received N/2 of them, one RQ worker is SIGKILLed with its work horse (RQ puts the
horse in a process group of its own, so both groups are killed) while the horse is delivering a
batch; the other worker and the recovery pass carry on. The script waits (bounded) until every
message is `sent`, counts what the provider received twice and what was flagged
`possible_duplicate`, checks `/metrics` against the database and the provider, stops Redis and
checks that `/readyz` answers 503 naming `redis`.

Run: .venv/bin/python bench/production.py [--messages 1000] [--clients 8] [--latency-ms 50]
                                          [--web-concurrency 2] [--keep]

Nothing leaves 127.0.0.1. Every process it starts is stopped however it ends (Ctrl-C included),
and the temporary directory (logs, static files) is deleted unless --keep. The exit status is 0
only when every check passed.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import platform
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.processes import clean_environment, free_port, wait_until  # noqa: E402
from tests.servers.provider import FakeProvider  # noqa: E402
from tests.servers.real import PostgresServer, RedisServer, ServerUnavailable  # noqa: E402

PYTHON = sys.executable
LEASE_SECONDS = 20
RECOVERY_GRACE = 5
RECOVERY_INTERVAL = 2
DELIVERY_TIMEOUT = 300.0  # seconds to wait for every message to be sent
TEXT = "Hello, this is a message of the production benchmark (bench/production.py). " * 3


class Failed(Exception):
    """A step of the run failed: the message says what, the logs say why."""


# Processes -------------------------------------------------------------------------------------


def _proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, pgrp) of every process, from /proc."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z":
            table[int(entry)] = (int(fields[1]), int(fields[2]))
    return table


class Child:
    """A process of the stack in its own session (so its own process group), its output in a log
    file. Its descendants are tracked, since RQ's work horse leaves the worker's process group."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], workdir: Path):
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.popen = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def descendants(self) -> dict[int, int]:
        """pid -> pgrp of every live descendant."""
        table = _proc_table()
        found: dict[int, int] = {}
        frontier = [self.pid]
        while frontier:
            parent = frontier.pop()
            for pid, (ppid, pgrp) in table.items():
                if ppid == parent and pid not in found:
                    found[pid] = pgrp
                    frontier.append(pid)
        return found

    def horses(self) -> list[int]:
        """Descendants in a process group other than the child's own: RQ's work horses."""
        return [pid for pid, pgrp in self.descendants().items() if pgrp != self.pid]

    def kill(self) -> list[int]:
        """SIGKILL the process group and every descendant's group (the work horse's too), at once;
        returns the pids killed."""
        victims = self.descendants()
        groups = {self.pid, *victims.values()}
        for group in groups:
            try:
                os.killpg(group, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for pid in victims:  # a descendant that somehow sits in a foreign group
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.popen.wait(timeout=10)
        return [self.pid, *victims]

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM to the process group (what `kill` from a shell or KillMode=mixed sends to RQ's
        main process), then SIGKILL to whatever is left, descendants in other groups included."""
        leftovers = self.descendants()
        if self.alive():
            try:
                os.killpg(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        leftovers.update(self.descendants())
        for group in {self.pid, *leftovers.values()}:
            try:
                os.killpg(group, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for pid in leftovers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()

    def output(self, size: int = 3000) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-size:]


def wait_for(condition, timeout: float, what: str, interval: float = 0.1):
    """tests/e2e/processes.py's wait, failing the run's way (Failed) instead of a test's."""
    try:
        return wait_until(condition, timeout=timeout, interval=interval, what=what)
    except AssertionError as err:
        raise Failed(str(err)) from None


# HTTP ------------------------------------------------------------------------------------------


def request(
    port: int, method: str, path: str, *, body: dict | None = None, token: str = "", timeout: float = 30.0
) -> tuple[int, bytes]:
    """One request on a connection of its own (gunicorn's sync workers close each connection)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Host": "127.0.0.1"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if token:
            headers["Authorization"] = f"Bearer {token}"
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = re.match(r"^([A-Za-z_:][\w:]*)(\{[^}]*\})?\s+(\S+)", line)
        if match:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
            samples.append((match.group(1), labels, float(match.group(3))))
    return samples


# The run ---------------------------------------------------------------------------------------


class Run:
    def __init__(self, args):
        self.args = args
        self.n = args.messages
        self.workdir = Path(tempfile.mkdtemp(prefix="smtest-production-"))
        self.children: list[Child] = []
        self.provider: FakeProvider | None = None
        self.postgres: PostgresServer | None = None
        self.redis: RedisServer | None = None
        self.db = None
        self.figures: dict = {}
        self.checks: list[tuple[str, bool, str]] = []  # (name, passed, detail)
        self.notes: list[str] = []
        self.kill_info: dict | None = None
        self.sending_at_kill: dict[str, str] = {}
        self.stranded: set[str] = set()
        self.accepted: dict[int, tuple[str, float]] = {}

    # Set-up ------------------------------------------------------------------------------------

    def log(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)

    def check(self, name: str, passed: bool, detail: str) -> bool:
        self.checks.append((name, bool(passed), detail))
        return bool(passed)

    def manage(self, *argv: str, timeout: float = 300) -> str:
        result = subprocess.run(
            [PYTHON, str(ROOT / "manage.py"), *argv],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode:
            raise Failed(
                f"manage.py {' '.join(argv)} exited with {result.returncode}:\n"
                f"{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
            )
        return result.stdout

    def start(self, name: str, *argv: str) -> Child:
        child = Child(name, list(argv), self.env, self.workdir)
        self.children.append(child)
        return child

    def environment(self) -> dict[str, str]:
        self.web_port = free_port()
        self.metrics_token = secrets.token_urlsafe(24)
        # Not under /sendgrid/: with DEBUG off the system check sandbox.E001 (rightly) stops every
        # management command whose settings point an ESP at a loopback URL under the sandbox's
        # paths (docs/sandbox.md). The counting provider answers SendGrid on any path.
        sendgrid = {
            "ANYMAIL_SENDGRID_API_KEY": "SG.bench-key",
            "ANYMAIL_SENDGRID_API_URL": f"{self.provider.url}/v3/",
        }
        return clean_environment(
            DJANGO_SETTINGS_MODULE="smtest.settings",
            DEBUG="0",
            SECRET_KEY=secrets.token_urlsafe(50),
            ALLOWED_HOSTS="127.0.0.1",
            # Plain HTTP on loopback, no proxy in front: no redirect to HTTPS, no HSTS.
            SECURE_SSL_REDIRECT="0",
            SECURE_HSTS_SECONDS="0",
            DATABASE_URL=f"{self.postgres.url}?connect_timeout=3",
            CACHE_URL=self.redis.url_for(0),
            TASKS_BACKEND="rq",
            REDIS_URL=self.redis.url_for(1),
            FIRST_WORKING_EMAIL_BACKENDS="sendgrid",
            **sendgrid,
            ANYMAIL_WEBHOOK_SECRET=f"bench:{secrets.token_urlsafe(16)}",
            DEFAULT_FROM_EMAIL="bench@example.com",
            STATIC_ROOT=str(self.workdir / "static"),
            MAILSERVICE_METRICS_TOKEN=self.metrics_token,
            # A killed worker's messages come back within the run (docs/delivery.md, "Leases").
            MAILSERVICE_LEASE_SECONDS=str(LEASE_SECONDS),
            MAILSERVICE_RECOVERY_GRACE=str(RECOVERY_GRACE),
            MAILSERVICE_RECOVERY_INTERVAL=str(RECOVERY_INTERVAL),
            # The default 600 requests per minute and key would make this a test of the limit.
            MAILSERVICE_API_RATE_LIMIT="0",
            WEB_CONCURRENCY=str(self.args.web_concurrency),
            BIND=f"127.0.0.1:{self.web_port}",
            LOG_LEVEL="INFO",
        )

    def bring_up(self) -> None:
        self.provider = FakeProvider(delay=self.args.latency_ms / 1000)
        # The killed work horse's connections reset mid-request: expected, not worth a traceback.
        self.provider.server.handle_error = lambda request, address: None
        self.log(
            f"local provider on {self.provider.url} (answers after {self.args.latency_ms:g} ms); "
            f"work directory {self.workdir}"
        )
        try:
            self.postgres = PostgresServer.start()
            self.redis = RedisServer.start()
        except ServerUnavailable as err:
            raise Failed(f"a server cannot run here: {err}") from None
        self.log(f"PostgreSQL on 127.0.0.1:{self.postgres.port}, Redis on 127.0.0.1:{self.redis.port}")
        self.env = self.environment()

        started = time.monotonic()
        self.manage("migrate", "--no-input")
        self.manage("collectstatic", "--no-input")
        self.log(f"migrate + collectstatic: {time.monotonic() - started:.1f} s")
        output = self.manage("create_api_key", "bench-production")
        lines = [line.strip() for line in output.splitlines() if line.strip()]
        # "API key 'bench-production' (prefix …, scopes …, sender domains: any); shown only now:" then the key.
        if len(lines) < 2 or not lines[0].startswith("API key") or " " in lines[-1]:
            raise Failed(f"create_api_key printed something unexpected:\n{output}")
        self.api_key = lines[-1]

        import psycopg  # the project's PostgreSQL driver

        self.db = psycopg.connect(self.postgres.url, autocommit=True)

        self.web = self.start(
            "gunicorn", PYTHON, "-m", "gunicorn", "-c", str(ROOT / "deploy" / "gunicorn.conf.py")
        )

        def web_up():
            if not self.web.alive():
                raise Failed(f"gunicorn exited:\n{self.web.output()}")
            try:
                return request(self.web_port, "GET", "/healthz", timeout=2)[0] == 200
            except OSError:
                return False

        wait_for(web_up, 60, "gunicorn to answer /healthz")
        status, body = request(self.web_port, "GET", "/readyz")
        if status != 200:
            raise Failed(f"/readyz answered {status} before the run: {body[:500]!r}")
        status, _ = request(self.web_port, "GET", "/static/admin/css/base.css")
        self.check(
            "static files served (collectstatic, WhiteNoise)",
            status == 200,
            f"/static/admin/css/base.css: {status}",
        )

        rq = ("manage.py", "rqworker", "--job-class", "django_tasks_rq.Job", "--with-scheduler", "default")
        self.workers = [self.start(f"worker-{i}", PYTHON, *rq) for i in (1, 2)]
        self.recovery = self.start("recovery", PYTHON, "manage.py", "recover_messages", "--loop")

        def workers_listening():
            for child in (*self.workers, self.recovery):
                if not child.alive():
                    raise Failed(f"{child.name} exited:\n{child.output()}")
            return all("Listening on" in w.output(100_000) for w in self.workers)

        wait_for(workers_listening, 90, "both RQ workers to listen on the queue", interval=0.25)
        self.log(
            f"gunicorn ({self.args.web_concurrency} workers) on 127.0.0.1:{self.web_port}, "
            "2 RQ workers and the recovery pass up"
        )

    # The load ----------------------------------------------------------------------------------

    def post_all(self) -> None:
        n, lock = self.n, threading.Lock()
        next_index = iter(range(n))
        self.accepted = {}  # index -> (message id, wall time accepted)
        errors: Counter = Counter()
        retries = Counter()

        def client():
            while True:
                with lock:
                    i = next(next_index, None)
                if i is None:
                    return
                body = {"to": f"rcpt{i}@example.net", "subject": f"prod-{i}", "text": TEXT}
                for attempt in range(5):
                    try:
                        status, raw = request(
                            self.web_port, "POST", "/api/messages", body=body, token=self.api_key
                        )
                    except OSError as err:
                        status, raw = 0, repr(err).encode()
                    if status == 202:
                        with lock:
                            self.accepted[i] = (json.loads(raw)["id"], time.time())
                        break
                    with lock:
                        errors[f"{status} {raw[:120]!r}"] += 1
                        retries[i] += 1
                    time.sleep(0.2 * (attempt + 1))

        threads = [threading.Thread(target=client, daemon=True) for _ in range(self.args.clients)]
        self.post_started = time.time()
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=600)
        seconds = time.monotonic() - started
        times = [t for _, t in self.accepted.values()]
        self.first_accept, self.last_accept = (min(times), max(times)) if times else (None, None)
        self.figures["accept_seconds"] = seconds
        self.figures["accept_rate"] = len(self.accepted) / seconds if seconds else 0.0
        self.figures["accept_errors"] = dict(errors)
        # What gunicorn's access log says each accept took inside a web worker (ms).
        durations = sorted(
            int(m)
            for m in re.findall(r'"POST /api/messages HTTP/1.1" 202 \d+ (\d+)ms', self.web.output(10**8))
        )
        if durations:
            self.figures["web_ms"] = (durations[len(durations) // 2], durations[int(len(durations) * 0.9)])
        self.check(
            "every message accepted with 202",
            len(self.accepted) == n,
            f"{len(self.accepted)}/{n} accepted" + (f"; errors {dict(errors)}" if errors else ""),
        )
        self.log(
            f"{len(self.accepted)} messages accepted in {seconds:.2f} s by {self.args.clients} clients: "
            f"{self.figures['accept_rate']:.0f} msg/s through gunicorn"
        )

    def kill_halfway(self, stop: threading.Event) -> None:
        """Once the provider has N/2 requests, SIGKILL the RQ worker whose work horse is
        delivering a batch (its process group and the horse's)."""
        half = self.n // 2
        while not stop.is_set() and self.provider.count() < half:
            time.sleep(0.005)
        if stop.is_set():
            return
        reached = time.monotonic()
        victim = None
        while not stop.is_set() and time.monotonic() - reached < 30:
            busy = [w for w in self.workers if w.horses()]
            if busy:
                victim = busy[0]
                break
            time.sleep(0.005)
        if victim is None:
            self.notes.append("no RQ work horse was running after the halfway point: no worker killed")
            return
        horses = victim.horses()
        count_at_kill = self.provider.count()
        pids = victim.kill()
        self.killed_at = time.time()
        self.kill_info = {
            "worker": victim.name,
            "pids": pids,
            "horses": horses,
            "provider_count": count_at_kill,
            "delay": time.monotonic() - reached,
        }
        with self.db.cursor() as cur:
            cur.execute("SELECT subject, lease_owner FROM mailservice_message WHERE status = 'sending'")
            self.sending_at_kill = dict(cur.fetchall())
        self.log(
            f"SIGKILLed {victim.name} (pids {pids}, work horse {horses}) with {count_at_kill} provider "
            f"requests received; {len(self.sending_at_kill)} messages in 'sending'"
        )

    def statuses(self) -> Counter:
        with self.db.cursor() as cur:
            cur.execute("SELECT status, count(*) FROM mailservice_message GROUP BY status")
            return Counter(dict(cur.fetchall()))

    def run_load(self) -> None:
        stop = threading.Event()
        killer = threading.Thread(target=self.kill_halfway, args=(stop,), daemon=True)
        killer.start()
        try:
            self.post_all()
            # The dead worker's batch: still `sending` under the same lease a few seconds after the
            # kill, well inside the lease (the live worker finishes a batch in about a second).
            killer.join(timeout=120)
            if killer.is_alive():
                raise Failed(
                    f"the provider never reached {self.n // 2} requests; statuses {dict(self.statuses())}"
                )
            if self.kill_info:
                time.sleep(max(0.0, self.killed_at + 5 - time.time()))
                with self.db.cursor() as cur:
                    cur.execute(
                        "SELECT subject, lease_owner FROM mailservice_message WHERE status = 'sending'"
                    )
                    now = dict(cur.fetchall())
                self.stranded = {s for s, owner in now.items() if self.sending_at_kill.get(s) == owner}
                self.log(
                    f"{len(self.stranded)} messages still held by the dead worker's lease 5 s after the kill"
                )
            self.wait_delivered()
        finally:
            stop.set()

    def wait_delivered(self) -> None:
        deadline = time.monotonic() + DELIVERY_TIMEOUT
        last_report = 0.0
        while True:
            statuses = self.statuses()
            if statuses.get("sent", 0) >= len(self.accepted) and sum(statuses.values()) == statuses.get(
                "sent", 0
            ):
                break
            for child in (
                self.workers[1]
                if self.kill_info and self.kill_info["worker"] == "worker-1"
                else self.workers[0],
                self.recovery,
                self.web,
            ):
                if not child.alive():
                    raise Failed(f"{child.name} exited during the run:\n{child.output()}")
            if time.monotonic() > deadline:
                raise Failed(f"not every message was sent within {DELIVERY_TIMEOUT:.0f} s: {dict(statuses)}")
            if time.monotonic() - last_report > 10:
                self.log(f"waiting for delivery: {dict(statuses)}")
                last_report = time.monotonic()
            time.sleep(0.25)
        observed = time.time()
        with self.db.cursor() as cur:
            cur.execute(
                "SELECT extract(epoch FROM max(sent_at)), "
                "extract(epoch FROM max(sent_at) FILTER (WHERE NOT possible_duplicate)) "
                "FROM mailservice_message"
            )
            last_sent, last_sent_unflagged = (float(v) if v is not None else None for v in cur.fetchone())
        self.figures.update(
            last_sent=last_sent,
            deliver_from_first=last_sent - self.first_accept,
            deliver_from_last=last_sent - self.last_accept,
            unflagged_from_first=(last_sent_unflagged - self.first_accept) if last_sent_unflagged else None,
            observed_from_first=observed - self.first_accept,
        )
        self.log(f"every message sent {self.figures['deliver_from_first']:.1f} s after the first accept")

    # Checks ------------------------------------------------------------------------------------

    def count(self) -> None:
        n = self.n
        with self.db.cursor() as cur:
            cur.execute("SELECT subject, status, possible_duplicate FROM mailservice_message")
            rows = cur.fetchall()
            cur.execute("SELECT provider, outcome, count(*) FROM mailservice_deliveryattempt GROUP BY 1, 2")
            attempts = {(p, o): c for p, o, c in cur.fetchall()}
        subjects = {f"prod-{i}" for i in self.accepted}
        per_subject = self.provider.per_subject()
        sent = {s for s, status, _ in rows if status == "sent"}
        flagged = {s for s, _, dup in rows if dup}
        received_twice = {s for s, c in per_subject.items() if c > 1}
        never_received = subjects - set(per_subject)
        lost = (subjects - sent) | never_received
        extra_requests = sum(per_subject.values()) - len(per_subject)
        self.figures.update(
            provider_requests=sum(per_subject.values()),
            duplicates=len(received_twice),
            duplicate_requests=extra_requests,
            flagged=len(flagged),
            lost=len(lost),
            attempts=attempts,
            stranded=len(self.stranded),
            max_per_message=max(per_subject.values(), default=0),
        )
        self.check(
            "no message lost (every accepted message sent and received by the provider)",
            not lost,
            f"{len(lost)} lost" + (f": {sorted(lost)[:10]}" if lost else ""),
        )
        self.check(
            "no message received more than twice",
            self.figures["max_per_message"] <= 2,
            f"at most {self.figures['max_per_message']} requests for one message",
        )
        self.check(
            "every duplicate the provider received is flagged possible_duplicate",
            received_twice <= flagged,
            f"{len(received_twice - flagged)} unflagged duplicate(s)",
        )
        if self.kill_info:
            self.check(
                "possible_duplicate only on the killed worker's batch",
                flagged <= self.stranded and flagged,
                f"{len(flagged)} flagged, {len(self.stranded)} held by the dead worker, "
                f"{len(flagged - self.stranded)} flagged outside it",
            )
        unexpected = {k: c for k, c in attempts.items() if k[1] not in ("sent", "ambiguous")}
        self.check(
            "attempts: one `sent` per message, one `ambiguous` per flagged message, nothing else",
            attempts.get(("sendgrid", "sent"), 0) == n
            and attempts.get(("", "ambiguous"), 0) == len(flagged)
            and not unexpected,
            ", ".join(f"{p or '(none)'}/{o}: {c}" for (p, o), c in sorted(attempts.items())),
        )

    def check_metrics(self) -> None:
        status, body = request(self.web_port, "GET", "/metrics")
        self.check("/metrics refuses a scrape without the token", status == 401, f"{status}")
        status, body = request(self.web_port, "GET", "/metrics", token=self.metrics_token)
        if status != 200:
            self.check("/metrics with the token", False, f"{status}: {body[:300]!r}")
            return
        samples = parse_metrics(body.decode())

        def value(name, **labels):
            return sum(
                v for m, ls, v in samples if m == name and all(ls.get(k) == x for k, x in labels.items())
            )

        sent = value("smtest_messages", status="sent")
        attempts_sent = value("smtest_provider_attempts_total", provider="sendgrid", outcome="sent")
        ambiguous = value("smtest_provider_attempts_total", outcome="ambiguous")
        attempts_all = value("smtest_provider_attempts_total")
        delivered_count = value("smtest_delivery_seconds_count")
        depth = value("smtest_queue_depth")
        f = self.figures
        # The provider got every recorded `sent` attempt, plus the sends of the dead work horse that
        # were never recorded (the duplicates); the ambiguous attempts stand for those sends.
        adds_up = (
            sent == self.n
            and attempts_sent == self.n
            and ambiguous == f["flagged"]
            and f["provider_requests"] == attempts_sent + f["duplicate_requests"]
            and delivered_count == self.n
            and depth == 0
            and attempts_all == attempts_sent + ambiguous
        )
        self.figures["metrics"] = dict(
            sent=sent,
            attempts_sent=attempts_sent,
            ambiguous=ambiguous,
            delivery_count=delivered_count,
            queue_depth=depth,
        )
        self.check(
            '/metrics: smtest_messages{status="sent"} = N and the provider attempts add up',
            adds_up,
            f"sent {sent:g}, attempts sendgrid/sent {attempts_sent:g}, ambiguous {ambiguous:g}, "
            f"provider requests {f['provider_requests']} = {attempts_sent:g} + {f['duplicate_requests']} "
            f"duplicates, smtest_delivery_seconds_count {delivered_count:g}, queue depth {depth:g}",
        )

    def check_readyz(self) -> None:
        status, body = request(self.web_port, "GET", "/readyz")
        self.check("/readyz 200 with Redis up", status == 200, f"{status} {body.decode()[:200]}")
        self.redis.stop()
        started = time.monotonic()
        status, body = request(self.web_port, "GET", "/readyz")
        seconds = time.monotonic() - started
        try:
            down = json.loads(body).get("down", [])
        except ValueError:
            down = None
        self.figures["readyz"] = (status, down, seconds)
        self.check(
            "/readyz 503 naming redis once Redis stops",
            status == 503 and down is not None and "redis" in down,
            f"{status} {body.decode()[:200]} in {seconds:.2f} s",
        )

    # Report and teardown -------------------------------------------------------------------------

    def report(self) -> str:
        f, a = self.figures, self.args
        lines = [
            f"bench/production.py: N = {self.n} messages, {a.clients} clients, gunicorn WEB_CONCURRENCY="
            f"{a.web_concurrency}, 2 RQ workers + recover_messages --loop, provider latency {a.latency_ms:g} ms, "
            f"lease {LEASE_SECONDS} s, recovery grace {RECOVERY_GRACE} s / interval {RECOVERY_INTERVAL} s"
        ]
        if "accept_rate" in f:
            lines.append(
                f"  accept rate through gunicorn (POST /api/messages, 202): {f['accept_rate']:.0f} msg/s "
                f"({len(self.accepted)} in {f['accept_seconds']:.2f} s)"
                + (
                    f"; in a web worker {f['web_ms'][0]} ms median, {f['web_ms'][1]} ms p90 (access log)"
                    if f.get("web_ms")
                    else ""
                )
            )
        if self.kill_info:
            k = self.kill_info
            lines.append(
                f"  SIGKILL: {k['worker']} and its work horse after {k['provider_count']} provider requests; "
                f"{f.get('stranded', len(self.stranded))} messages held by its lease"
            )
        if "deliver_from_first" in f:
            lines.append(
                f"  time to deliver all: {f['deliver_from_first']:.1f} s from the first accept, "
                f"{f['deliver_from_last']:.1f} s from the last (the killed batch waits for its "
                f"{LEASE_SECONDS} s lease)"
            )
            if f.get("unflagged_from_first") is not None:
                lines.append(
                    f"  all but the recovered batch: {f['unflagged_from_first']:.1f} s from the first accept"
                )
        if "duplicates" in f:
            lines.append(
                f"  duplicates received by the provider: {f['duplicates']} messages "
                f"({f['provider_requests']} requests for {self.n} messages)"
            )
            lines.append(f"  possible_duplicate flags: {f['flagged']}")
            lines.append(f"  lost messages: {f['lost']}")
        for name, passed, detail in self.checks:
            lines.append(f"  [{'ok' if passed else 'FAILED'}] {name}: {detail}")
        for note in self.notes:
            lines.append(f"  note: {note}")
        return "\n".join(lines)

    def teardown(self) -> None:
        for child in reversed(self.children):
            try:
                child.stop()
            except Exception as err:  # keep stopping the others
                print(f"stopping {child.name}: {err!r}", file=sys.stderr)
        if self.db is not None:
            try:
                self.db.close()
            except Exception:
                pass
        for server in (self.redis, self.postgres):
            if server is not None:
                server.stop()
        if self.provider is not None:
            self.provider.close()


def versions(run: Run) -> str:
    found = [f"Python {platform.python_version()}"]
    for dist in ("django", "gunicorn", "rq", "django-rq", "django-tasks-rq", "psycopg", "redis"):
        try:
            found.append(f"{dist} {version(dist)}")
        except Exception:
            pass
    try:
        with run.db.cursor() as cur:
            cur.execute("SHOW server_version")
            found.append(f"PostgreSQL {cur.fetchone()[0].split()[0]}")
    except Exception:
        pass
    try:
        out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, timeout=10).stdout
        found.append("Redis " + re.search(r"v=(\S+)", out).group(1))
    except Exception:
        pass
    return ", ".join(found)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000, help="messages to post (default 1000)")
    parser.add_argument("--clients", type=int, default=8, help="client threads posting at once (default 8)")
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=50.0,
        help="how long the local provider takes to answer a send (default 50 ms, like a real ESP)",
    )
    parser.add_argument("--web-concurrency", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary directory (logs, static files)"
    )
    args = parser.parse_args()
    if args.messages < 2 or args.clients < 1:
        parser.error("--messages must be at least 2 and --clients at least 1")

    # SIGTERM (and SIGHUP) end the run like Ctrl-C: through the finally below.
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGHUP, interrupt)

    run = Run(args)
    load = os.getloadavg()
    began = time.monotonic()
    error = None
    header = ""
    try:
        run.bring_up()
        header = (
            f"{datetime.date.today().isoformat()}; {os.cpu_count()} cores ({platform.machine()}), Linux "
            f"{platform.release()}; {versions(run)}; load average before the run "
            f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
        )
        run.run_load()
        run.count()
        run.check_metrics()
        run.check_readyz()
    except KeyboardInterrupt:
        error = "interrupted"
    except Failed as err:
        error = str(err)
    except Exception as err:  # report it like the others, with the logs
        import traceback

        error = "".join(traceback.format_exception(err))
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # let the teardown finish
            signal.signal(signum, signal.SIG_IGN)
        if error:
            print(f"\nFAILED: {error}", file=sys.stderr)
            for child in run.children if error != "interrupted" else ():
                print(
                    f"\n--- {child.name} ({child.log_path.name}), last lines ---\n{child.output(2000)}",
                    file=sys.stderr,
                )
        run.teardown()
        if args.keep:
            print(f"logs kept in {run.workdir}")
        else:
            shutil.rmtree(run.workdir, ignore_errors=True)
    print()
    if header:
        print(header)
    print(run.report())
    print(f"  whole run: {time.monotonic() - began:.0f} s; every process stopped")
    passed = not error and all(ok for _, ok, _ in run.checks)
    print(
        "RESULT: "
        + ("every check passed" if passed else f"FAILED{': ' + error.splitlines()[0] if error else ''}")
    )
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
