"""The production stack on this machine: the accept rate through gunicorn and the time to deliver a burst.

The stack is the one tests/acceptance/test_production_stack.py checks, on loopback: throwaway
PostgreSQL and Redis, gunicorn with deploy/gunicorn.conf.py (DEBUG off, the Redis cache,
TASKS_BACKEND=rq), two RQ workers and the recovery pass, SendGrid pointed at the local ESP of
tests/esp_server.py answering after --latency-ms. N messages are posted through
`POST /api/messages` by several client threads; the script waits until every one is `sent`.
It measures and prints; the test injects the faults and checks.

Run: .venv/bin/python bench/production_stack.py [--messages 1000] [--clients 8] [--latency-ms 50]
                                                [--web-concurrency 2] [--keep]

Nothing leaves 127.0.0.1. Every process it starts is stopped however it ends (Ctrl-C included),
and the temporary directory (logs) is deleted unless --keep.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import signal
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.processes import free_port, wait_until  # noqa: E402
from tests.esp_server import FakeProvider  # noqa: E402
from tests.servers.clients import post_burst  # noqa: E402
from tests.servers.real import PostgresServer, RedisServer  # noqa: E402
from tests.servers.stack import manage, production_environment, start_processes  # noqa: E402

DELIVERY_TIMEOUT = 300.0  # seconds to wait for every message to be sent
TEXT = "Hello, this is a message of the production stack benchmark. " * 3
ACCESS_LINE = re.compile(r'"POST /api/messages HTTP/1.1" 202 \d+ (\d+)ms')


def last_sent(database_url: str, count: int) -> float:
    """Once `count` messages are sent (polled), when the last one was (time.time())."""
    import psycopg  # the project's PostgreSQL driver

    with psycopg.connect(database_url, autocommit=True) as db:

        def sent() -> bool:
            with db.cursor() as cur:
                cur.execute(
                    "SELECT count(*) FILTER (WHERE status = 'sent'), count(*) FROM mailservice_message"
                )
                done, total = cur.fetchone()
            return done >= count and done == total

        wait_until(sent, timeout=DELIVERY_TIMEOUT, interval=0.25, what="every message sent")
        with db.cursor() as cur:
            cur.execute("SELECT extract(epoch FROM max(sent_at)) FROM mailservice_message")
            return float(cur.fetchone()[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000, help="messages to post (default 1000)")
    parser.add_argument("--clients", type=int, default=8, help="client threads posting at once (default 8)")
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=50.0,
        help="how long the local provider takes to answer a send (default 50 ms, as an ESP)",
    )
    parser.add_argument("--web-concurrency", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    args = parser.parse_args()

    def interrupt(signum, frame):  # SIGTERM and SIGHUP end the run like Ctrl-C: every process stopped
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGHUP, interrupt)
    load = " ".join(f"{n:.2f}" for n in os.getloadavg())
    began = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="smtest-bench-stack-"))
    with ExitStack() as stack:
        if args.keep:
            stack.callback(print, f"logs kept in {workdir}")
        else:
            stack.callback(shutil.rmtree, workdir, True)
        provider = FakeProvider(delay=args.latency_ms / 1000)
        stack.callback(provider.close)
        postgres = PostgresServer.start()
        stack.callback(postgres.stop)
        redis = RedisServer.start()
        stack.callback(redis.stop)
        port = free_port()
        env = production_environment(
            postgres,
            redis,
            FIRST_WORKING_EMAIL_BACKENDS="sendgrid",
            # Off the sandbox's paths, which the system check sandbox.E001 refuses with DEBUG off.
            **provider.anymail_environment(prefix="/esp"),
            WEB_CONCURRENCY=str(args.web_concurrency),
            BIND=f"127.0.0.1:{port}",
        )
        manage("migrate", "--no-input", env=env, timeout=300)
        api_key = manage("create_api_key", "bench", "--quiet-key", env=env).strip().splitlines()[-1]
        web, _, _ = start_processes(env, workdir, port, stack.callback)
        print(
            f"the stack is up after {time.monotonic() - began:.0f} s; posting {args.messages} messages",
            flush=True,
        )

        started = time.monotonic()
        burst = post_burst(
            f"http://127.0.0.1:{port}",
            api_key,
            args.messages,
            clients=args.clients,
            prefix="stack-",
            text=TEXT,
        )
        accept_seconds = time.monotonic() - started
        refusals = burst.refusals
        if len(burst.accepted) < args.messages:
            raise SystemExit(f"{len(burst.accepted)} of {args.messages} accepted; refusals {dict(refusals)}")
        done = last_sent(postgres.url, args.messages)
        web_ms = sorted(int(ms) for ms in ACCESS_LINE.findall(web.access_log.read_text(errors="replace")))

    times = [at for _, at in burst.accepted.values()]
    first, last = min(times), max(times)
    n = args.messages
    print(
        f"\n{time.strftime('%Y-%m-%d')}; {os.cpu_count()} cores ({platform.machine()}), "
        f"Linux {platform.release()}; Python {platform.python_version()}; load average before: {load}"
    )
    print(
        f"N = {n} messages, {args.clients} clients, gunicorn WEB_CONCURRENCY={args.web_concurrency}, "
        f"2 RQ workers + recover_messages --loop, provider latency {args.latency_ms:g} ms"
    )
    print(
        f"  accept rate through gunicorn (POST /api/messages, 202): {n / accept_seconds:.0f} msg/s "
        f"({n} in {accept_seconds:.2f} s; {sum(refusals.values())} refusals retried)"
    )
    if web_ms:
        print(
            f"  in a web worker (access log): {web_ms[len(web_ms) // 2]} ms median, "
            f"{web_ms[int(len(web_ms) * 0.9)]} ms p90"
        )
    print(
        f"  time to deliver all: {done - first:.1f} s from the first accept, "
        f"{done - last:.1f} s from the last"
    )
    print(f"  whole run: {time.monotonic() - began:.0f} s; every process stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
