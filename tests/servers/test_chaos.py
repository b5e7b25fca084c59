"""The chaos run: the production stack (PostgreSQL, Redis, gunicorn, two RQ workers and the
recovery pass, each a real process configured through the environment) delivering a burst of
messages posted over HTTP while its pieces fail (docs/delivery.md, "When a message can be sent
twice" and "Database and queue outages"; docs/deployment.md, "Outages"):

- the provider answers in LATENCY seconds, and each of the two in the chain (SendGrid, then
  Mailgun) answers 500 to a random ERROR_RATE share of requests;
- about every KILL_EVERY seconds, for FAULT_PHASE seconds from the first post (longer while the
  burst or the outages last), one RQ worker's work horse (the child running a delivery round) is
  SIGKILLed while it holds connections to the provider; the worker's main process is left alone;
- PostgreSQL is restarted once and Redis stopped for REDIS_OUTAGE seconds, mid-burst;
- clients retry a 503 (or a dropped connection) after Retry-After with the same Idempotency-Key.

It ends with nothing lost, no 500, every process alive, every message sent within DRAIN_GOAL
seconds of the last fault, and no more duplicates than the sends in flight of the killed horses
(MAILSERVICE_SEND_CONCURRENCY × kills), each flagged `possible_duplicate`. A one-line JSON
summary of the figures is printed and written to `chaos-summary.json` in the class's work
directory (and to SMTEST_CHAOS_LOGS, when set, with every process's log).

SMTEST_CHAOS_MESSAGES picks the number of messages (default 5,000); SMTEST_CHAOS_SEED the seed of
the provider's errors and of the kills.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from django.db import DatabaseError, connections
from django.db.models import Count

from mailservice.models import Message
from tests.e2e.processes import ROOT, Process
from tests.esp_server import FakeProvider
from tests.servers.base import ALIAS, RealServersTestCase
from tests.servers.clients import post_message
from tests.servers.stack import (
    horses,
    proc_stat,
    production_environment,
    provider_connections,
    wait_listening,
)

MESSAGES = int(os.environ.get("SMTEST_CHAOS_MESSAGES", "5000"))
SEED = int(os.environ.get("SMTEST_CHAOS_SEED", "1"))
CLIENTS = 8
LATENCY = 0.2  # seconds the provider takes to answer a send
ERROR_RATE = 0.10  # share of each provider's requests answered with a 500
CONCURRENCY = 32  # MAILSERVICE_SEND_CONCURRENCY: the ceiling of sends in flight per worker process
KILL_EVERY = 3.0  # seconds between two work horse kills, give or take a fifth
# Kills go on this long from the first post, and longer if the burst or the outages do.
FAULT_PHASE = 60.0
REDIS_OUTAGE = 20.0
PG_RESTART_AT = 0.2  # share of the messages accepted when PostgreSQL restarts
REDIS_PAUSE_AT = 0.45  # … and when Redis stops
DRAIN_GOAL = 60.0  # every message sent within this many seconds of the last fault
DRAIN_TIMEOUT = 240.0  # how long the test waits for the drain after the last fault
RETRY_FOR = 120.0  # how long a client keeps retrying one message before it gives up
UNFINISHED = ("queued", "sending", "deferred")
TEXT = "A message of the chaos run (tests/servers/test_chaos.py). " * 3


class Burst:
    """CLIENTS threads posting MESSAGES messages, each with its own subject and Idempotency-Key.
    A 503 is retried after its Retry-After, a dropped connection after a second, with the same
    key, until it is accepted or RETRY_FOR runs out. Every answer's status is counted."""

    def __init__(self, url: str, api_key: str, count: int):
        self.url, self.api_key, self.count = url, api_key, count
        self.lock = threading.Lock()
        self.next = iter(range(count))
        self.statuses: Counter = Counter()  # every answer, retries included
        self.odd: list[str] = []  # the first few answers that were neither 202 nor 503
        self.bare_503s = 0  # 503 answers without a Retry-After
        self.accepted: dict[int, str] = {}  # message index -> id answered with 202
        self.accepted_at: dict[int, float] = {}
        self.given_up: dict[int, str] = {}
        self.threads = [threading.Thread(target=self.client, daemon=True) for _ in range(CLIENTS)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self.threads)

    def accepted_count(self) -> int:
        with self.lock:
            return len(self.accepted)

    def client(self) -> None:
        while True:
            with self.lock:
                i = next(self.next, None)
            if i is None:
                return
            body = {"to": f"rcpt{i}@example.net", "subject": f"chaos-{i}", "text": TEXT}
            self.send(i, json.dumps(body).encode())

    def send(self, i: int, body: bytes) -> None:
        deadline = time.monotonic() + RETRY_FOR
        while True:
            answer = post_message(self.url, self.api_key, f"chaos-{i}", body)
            with self.lock:
                self.statuses[answer.status] += 1
                if answer.status == 503 and not answer.retry_after:
                    self.bare_503s += 1
                if answer.status not in (0, 202, 503) and len(self.odd) < 20:
                    self.odd.append(f"{answer.status} {answer.body[:300]!r}")
                if answer.status == 202:
                    self.accepted[i] = json.loads(answer.body)["id"]
                    self.accepted_at[i] = time.time()
                    return
            # A 500 is a bug (counted above); retrying it with the same key is still safe, and
            # lets the run go on to report its other figures.
            if answer.status not in (0, 500, 503) or time.monotonic() > deadline:
                with self.lock:
                    self.given_up[i] = f"{answer.status} {answer.body[:300]!r}"
                return
            pause = 1.0
            if answer.status == 503:
                try:
                    pause = float(answer.retry_after)
                except (TypeError, ValueError):
                    pause = 2.0
            time.sleep(pause)


@dataclass
class Faults:
    """What was done to the stack, and when (time.time())."""

    kills: list[dict] = field(default_factory=list)  # {"worker", "horse", "at", "provider_requests"}
    kill_misses: int = 0  # looks for a sending horse that found none
    pg_restart: tuple[float, float] | None = None  # (began, back)
    redis_outage: tuple[float, float] | None = None  # (paused, resumed)
    errors: list[str] = field(default_factory=list)  # exceptions raised in the fault threads

    def last_ended(self) -> float:
        ends = [kill["at"] for kill in self.kills]
        ends += [window[1] for window in (self.pg_restart, self.redis_outage) if window]
        return max(ends)


class ChaosRunTests(RealServersTestCase):
    needs = ("postgres", "redis")

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.provider = FakeProvider(delay=LATENCY, error_rate=ERROR_RATE, seed=SEED, senders_killed=True)
        cls.addClassCleanup(cls.provider.close)
        # Messages that both providers refused come back within seconds, not minutes.
        retries = {"MAILSERVICE_RETRY_BASE_DELAY": "2", "MAILSERVICE_RETRY_JITTER": "0"}
        cls.env = production_environment(
            cls.postgres,
            cls.redis,
            FIRST_WORKING_EMAIL_BACKENDS="sendgrid,mailgun",
            **cls.provider.anymail_environment(prefix="/esp"),
            **retries,
            MAILSERVICE_SEND_CONCURRENCY=str(CONCURRENCY),
            MAILSERVICE_RECOVERY_INTERVAL="5",
            MAILSERVICE_RECOVERY_GRACE="20",
        )
        cls.web, cls.url = cls.start_gunicorn(cls.env, workers=2, threads=4)

    def setUp(self):
        super().setUp()
        self.addCleanup(self.keep_logs)
        self.addCleanup(self.redis.resume)  # whatever happens, Redis is up for the cleanups
        output = self.manage("create_api_key", "chaos", "--scopes", "send,read", "--quiet-key", env=self.env)
        self.api_key = output.strip().splitlines()[-1]
        self.stopping = threading.Event()
        self.addCleanup(self.stopping.set)
        self.events = open(self.workdir / "chaos.log", "a")
        self.addCleanup(self.events.close)

    # Helpers -------------------------------------------------------------------------------

    def note(self, text: str) -> None:
        """One timestamped line in chaos.log (kept with the processes' logs)."""
        self.events.write(f"{time.strftime('%H:%M:%S')} {time.time():.3f} {text}\n")
        self.events.flush()

    def keep_logs(self) -> None:
        target = os.environ.get("SMTEST_CHAOS_LOGS")
        if target:
            Path(target).mkdir(parents=True, exist_ok=True)
            for path in self.workdir.glob("*.log"):
                shutil.copy(path, target)
            summary = self.workdir / "chaos-summary.json"
            if summary.exists():
                shutil.copy(summary, target)

    def db(self, read, default=None):
        """`read()` on the database, or `default` while it cannot be reached (restarting)."""
        try:
            return read()
        except DatabaseError:
            connections[ALIAS].close()
            return default

    def statuses(self) -> Counter:
        messages = Message.objects.using(ALIAS)
        return self.db(
            lambda: Counter(dict(messages.values_list("status").annotate(n=Count("id")))), Counter()
        )

    # Faults --------------------------------------------------------------------------------

    def kill_horses_periodically(
        self, workers: list[Process], faults: Faults, until: threading.Event
    ) -> None:
        """About every KILL_EVERY s, SIGKILL a work horse that is sending (it holds connections to
        the provider), from one worker or the other; never a main process."""
        rng = random.Random(SEED)
        port = self.provider.server.server_address[1]
        try:
            while not until.wait(KILL_EVERY * rng.uniform(0.8, 1.2)):
                order = rng.sample(workers, len(workers))
                deadline = time.monotonic() + 2.0
                killed = False
                while not killed and time.monotonic() < deadline and not until.is_set():
                    for worker in order:
                        found = horses(worker)
                        if not found:
                            continue
                        horse = found[0]
                        if not provider_connections(horse, port):
                            continue  # claiming, or waiting for the database: not sending
                        time.sleep(rng.uniform(0.0, 0.3))  # not always at its first send
                        state = proc_stat(horse)
                        connected = provider_connections(horse, port)
                        if not state or state[1] != worker.popen.pid or not connected:
                            continue  # its round ended meanwhile
                        try:
                            os.kill(horse, signal.SIGKILL)
                        except ProcessLookupError:
                            continue  # its round ended this instant
                        kill = {
                            "worker": worker.name,
                            "horse": horse,
                            "at": time.time(),
                            "connections": connected,
                            "provider_requests": self.provider.count(),
                        }
                        faults.kills.append(kill)
                        self.note(
                            f"SIGKILL work horse {horse} of {worker.name} holding {connected} connections "
                            f"to the provider; provider requests so far {kill['provider_requests']}"
                        )
                        killed = True
                        break
                    else:
                        time.sleep(0.1)
                if not killed:
                    faults.kill_misses += 1
        except Exception as err:  # reported by the test, not lost in a thread
            faults.errors.append(f"killer: {err!r}")

    def outages(self, burst: Burst, faults: Faults) -> None:
        """PostgreSQL restarted once the burst is PG_RESTART_AT done, Redis stopped for
        REDIS_OUTAGE s once it is REDIS_PAUSE_AT done."""
        try:
            self.wait_accepted(burst, PG_RESTART_AT)
            began = time.time()
            self.note(f"PostgreSQL restarting ({burst.accepted_count()} accepted)")
            took = self.postgres.restart()
            faults.pg_restart = (began, time.time())
            self.note(f"PostgreSQL back after {took:.2f} s")

            self.wait_accepted(burst, REDIS_PAUSE_AT)
            paused = time.time()
            self.note(f"Redis stopping ({burst.accepted_count()} accepted)")
            self.redis.pause()
            self.stopping.wait(REDIS_OUTAGE - (time.time() - paused))
            self.redis.resume()
            faults.redis_outage = (paused, time.time())
            self.note(
                f"Redis back after {faults.redis_outage[1] - paused:.1f} s "
                f"({burst.accepted_count()} accepted)"
            )
        except Exception as err:
            faults.errors.append(f"outages: {err!r}")

    def sample_in_flight(self, samples: list[int], until: threading.Event) -> None:
        """The provider's requests in flight, four times a second: how hard the workers drive it."""
        while not until.wait(0.25):
            samples.append(self.provider.in_flight)

    def wait_accepted(self, burst: Burst, share: float) -> None:
        while burst.accepted_count() < share * burst.count and not self.stopping.is_set():
            if not any(thread.is_alive() for thread in burst.threads):
                return  # the burst ended early: the fault comes now
            time.sleep(0.05)

    # The run -------------------------------------------------------------------------------

    def test_the_stack_loses_nothing_under_kills_a_database_restart_and_a_redis_outage(self):
        """MESSAGES posted while work horses are killed, PostgreSQL restarts and Redis stops: none
        lost, no 500, every process alive, drained within DRAIN_GOAL s of the last fault, and
        duplicates within the killed sends in flight, each flagged possible_duplicate."""
        began = time.time()
        workers = [self.start_rq_worker(f"rqworker-{n}", env=self.env) for n in (1, 2)]
        recovery = self.start_process(
            "recovery", [sys.executable, str(ROOT / "manage.py"), "recover_messages", "--loop"], env=self.env
        )
        wait_listening(workers, recovery)

        burst = Burst(self.url, self.api_key, MESSAGES)
        faults = Faults()
        faults_over = threading.Event()
        outages = threading.Thread(target=self.outages, args=(burst, faults), daemon=True)
        killer = threading.Thread(
            target=self.kill_horses_periodically, args=(workers, faults, faults_over), daemon=True
        )
        in_flight: list[int] = []
        sampler = threading.Thread(target=self.sample_in_flight, args=(in_flight, self.stopping), daemon=True)
        summary: dict = {"messages": MESSAGES}
        self.addCleanup(faults_over.set)
        try:
            self.note(f"burst of {MESSAGES} messages starts")
            burst_began = time.time()
            burst.start()
            sampler.start()
            outages.start()
            killer.start()
            self.assertTrue(burst.join(timeout=900), f"the clients still post after 900 s: {burst.statuses}")
            burst_seconds = time.time() - burst_began
            self.note(f"burst over: {burst.accepted_count()} accepted, answers {dict(burst.statuses)}")
            outages.join(timeout=120)
            self.assertFalse(outages.is_alive(), "the outages did not end")
            self.stopping.wait(FAULT_PHASE - (time.time() - burst_began))
            faults_over.set()  # no kill after the burst, the outages and FAULT_PHASE
            killer.join(timeout=30)
            self.assertEqual(faults.errors, [])
            last_fault = faults.last_ended()
            self.note(f"last fault ended; {len(faults.kills)} kills")

            # The drain: every message final; the processes checked all along.
            drained_at = None
            deadline = last_fault + DRAIN_TIMEOUT
            statuses = Counter()
            while time.time() < deadline:
                for process in (*workers, recovery, self.web):
                    self.assertTrue(
                        process.alive(), f"{process.name} died during the drain:\n{process.output()}"
                    )
                statuses = self.statuses()
                if statuses and not any(statuses[s] for s in UNFINISHED):
                    drained_at = time.time()
                    break
                time.sleep(0.25)
            self.note(f"drain {'over' if drained_at else 'timed out'}: {dict(statuses)}")
            summary.update(
                self.figures(burst, faults, burst_began, burst_seconds, last_fault, drained_at, statuses)
            )
            busy = sorted(n for n in in_flight if n)  # while the provider had work
            if busy:
                summary["provider_in_flight"] = {
                    "median": busy[len(busy) // 2],
                    "p90": busy[len(busy) * 9 // 10],
                    "max": busy[-1],
                    "ceiling": 2 * CONCURRENCY,
                }
        finally:
            faults_over.set()
            self.stopping.set()
            summary.setdefault("answers", {str(k): v for k, v in burst.statuses.items()})
            summary.setdefault("kills", len(faults.kills))
            summary["total_seconds"] = round(time.time() - began, 1)
            summary["load_average"] = [round(n, 2) for n in os.getloadavg()]
            line = json.dumps(summary, sort_keys=False)
            (self.workdir / "chaos-summary.json").write_text(line + "\n")
            print(f"\n[chaos] {line}", flush=True)

        # 1. Nothing lost.
        self.assertEqual(summary["given_up"], 0, f"clients gave up on messages: {summary}")
        self.assertEqual(
            summary["lost"], 0, f"accepted messages not sent: {summary['lost_examples']}; {summary}"
        )
        self.assertEqual(
            summary["never_at_provider"],
            0,
            f"subjects the provider never accepted: {summary['never_at_provider_examples']}; {summary}",
        )
        self.assertEqual(
            summary["stored"], summary["accepted"], f"messages stored other than once per 202: {summary}"
        )
        # 2. No 500.
        self.assertEqual(summary["500s"], 0, f"API 500s: {burst.odd}; {summary}")
        self.assertEqual(summary["odd_answers"], [], f"answers other than 202/503/no answer: {summary}")
        self.assertEqual(
            summary["503s_without_retry_after"], 0, f"503 answers without Retry-After: {summary}"
        )
        # 3. No process left dead.
        for process in (*workers, recovery, self.web):
            self.assertTrue(process.alive(), f"{process.name} is dead at the end:\n{process.output()}")
        # 4. Time to drain.
        self.assertIsNotNone(drained_at, f"not drained {DRAIN_TIMEOUT:.0f} s after the last fault: {summary}")
        self.assertLessEqual(
            summary["sent_after_last_fault"],
            DRAIN_GOAL,
            f"the last message was sent {summary['sent_after_last_fault']} s after the last fault "
            f"(goal {DRAIN_GOAL:.0f} s): {summary}",
        )
        # 5. Duplicates: within the killed sends in flight, each flagged.
        self.assertGreater(summary["kills"], 0, f"no work horse was killed: {summary}")
        self.assertLessEqual(
            summary["duplicates"],
            summary["duplicate_bound"],
            f"{summary['duplicates']} extra sends > {CONCURRENCY} × {summary['kills']} kills: {summary}",
        )
        self.assertEqual(
            summary["unflagged_duplicates"],
            0,
            f"received twice but not flagged possible_duplicate: {summary['unflagged_examples']}; {summary}",
        )

    def figures(
        self,
        burst: Burst,
        faults: Faults,
        began: float,
        burst_seconds: float,
        last_fault: float,
        drained_at: float | None,
        statuses: Counter,
    ) -> dict:
        """The run's figures, from the clients' answers, the provider's counts and the database."""
        connections[ALIAS].close()  # a connection opened before the restart may be gone
        ids = set(burst.accepted.values())
        fields = ("id", "subject", "status", "possible_duplicate", "sent_at")
        rows = list(Message.objects.using(ALIAS).values_list(*fields))
        by_id = {str(pk): (subject, status) for pk, subject, status, _, _ in rows}
        lost = sorted(pk for pk in ids if by_id.get(pk, (None, None))[1] != "sent")
        subjects = {f"chaos-{i}" for i in burst.accepted}
        accepted = self.provider.accepted_per_subject()
        never = sorted(subjects - set(accepted))
        twice = {subject: n for subject, n in accepted.items() if n > 1 and subject is not None}
        flagged = {subject for _, subject, _, duplicate, _ in rows if duplicate}
        unflagged = sorted(set(twice) - flagged)
        sent_times = [sent_at.timestamp() for *_, sent_at in rows if sent_at]
        last_sent = max(sent_times) if sent_times else None
        requests = self.provider.per_subject()
        return {
            "accepted": len(burst.accepted),
            "given_up": len(burst.given_up),
            "stored": len(rows),
            "lost": len(lost),
            "lost_examples": [(pk, by_id.get(pk)) for pk in lost[:10]],
            "never_at_provider": len(never),
            "never_at_provider_examples": never[:10],
            "answers": {str(k): v for k, v in sorted(burst.statuses.items())},
            "500s": burst.statuses[500],
            "503s": burst.statuses[503],
            "503s_without_retry_after": burst.bare_503s,
            "no_answer": burst.statuses[0],
            "odd_answers": burst.odd,
            "kills": len(faults.kills),
            "kill_misses": faults.kill_misses,
            "duplicates": sum(n - 1 for n in twice.values()),
            "duplicated_messages": len(twice),
            "duplicate_bound": CONCURRENCY * len(faults.kills),
            "flagged": len(flagged),
            "unflagged_duplicates": len(unflagged),
            "unflagged_examples": unflagged[:10],
            "provider_requests": sum(requests.values()),
            "provider_errors": sum(requests.values()) - sum(accepted.values()),
            # Requests whose subject the fake could not read: cut off by a kill (never answered), or taken.
            "provider_unparsed": requests[None],
            "provider_unparsed_taken": accepted[None],
            "statuses": dict(statuses),
            "pg_restart_seconds": round(faults.pg_restart[1] - faults.pg_restart[0], 2)
            if faults.pg_restart
            else None,
            "redis_outage_seconds": round(faults.redis_outage[1] - faults.redis_outage[0], 1)
            if faults.redis_outage
            else None,
            "burst_seconds": round(burst_seconds, 1),
            "last_fault_at_seconds": round(last_fault - began, 1),
            "sent_after_last_fault": round(last_sent - last_fault, 1) if last_sent else None,
            "drained_after_last_fault": round(drained_at - last_fault, 1) if drained_at else None,
        }
