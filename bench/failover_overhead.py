"""What the failover backend adds to sending, measured side by side against a local HTTP endpoint.

Budget (docs/failover.md, "Performance"): at most +3% over sending through the inner backend
directly with a healthy primary, and at most +5% over sending straight to the secondary when the
primary is dead (connection refused), because the remembered provider spares later messages the
dead one.

Run: .venv/bin/python bench/failover_overhead.py [--messages 400] [--rounds 9] [--cache locmem|file]
The local endpoint runs in its own process, so the sender's CPU time (process_time) counts only
the sending side, where the backend's overhead lives; wall time is reported too. Each round
runs every variant once, in alternating order, so machine noise hits them alike; the ratios are
medians over the rounds. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import gc
import io
import logging
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import django  # noqa: E402
from django.conf import settings  # noqa: E402

from tests.e2e.processes import free_port  # noqa: E402
from tests.esp_server import ProviderProcess  # noqa: E402


def configure(live_url: str, cache: str) -> None:
    cache_config = {
        "locmem": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "file": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": "/tmp/smtest-bench-cache",
        },
    }[cache]
    settings.configure(
        INSTALLED_APPS=["anymail", "failover"],
        CACHES={"default": cache_config},
        ANYMAIL={"SENDGRID_API_KEY": "bench-key"},
        EMAIL_BACKEND="failover.backends.FirstWorkingEmailBackend",
        LOGGING_CONFIG=None,
        # As a real project sets them (smtest/settings.py does).
        FIRST_WORKING_EMAIL_CACHE_TIMEOUT=3600,
        FIRST_WORKING_EMAIL_CACHE="default",
        FIRST_WORKING_EMAIL_CONNECT_TIMEOUT=3.05,
        FIRST_WORKING_EMAIL_READ_TIMEOUT=15.0,
        FIRST_WORKING_EMAIL_FAILOVER_ON_AMBIGUOUS=True,
    )
    django.setup()
    # As the project runs (LOG_LEVEL=INFO): whatever the backend logs at INFO is formatted, then dropped.
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logger = logging.getLogger("failover")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def backend_own_cost(messages, count: int = 20000) -> dict[str, float]:
    """Seconds per message the failover backend spends itself, around an inner backend that
    does nothing: free of network noise, so it shows what the ratios below can only estimate."""
    from django.core.mail.backends.base import BaseEmailBackend

    from failover.backends import FirstWorkingEmailBackend

    class NullBackend(BaseEmailBackend):
        def send_messages(self, email_messages):
            return len(email_messages)

    sys.modules[__name__].NullBackend = NullBackend
    chain = [{"NAME": "null", "BACKEND": f"{__name__}.NullBackend"}]
    batch = messages(count)
    best = {}
    for mode in ("connection", "batch"):
        runs = []
        for _ in range(3):
            started = time.perf_counter()
            if mode == "connection":
                for message in batch:
                    FirstWorkingEmailBackend(backends=chain).send_messages([message])
            else:
                FirstWorkingEmailBackend(backends=chain).send_messages(batch)
            runs.append((time.perf_counter() - started) / count)
        best[mode] = min(runs)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=400, help="messages per variant per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--cache", choices=["locmem", "file"], default="locmem")
    args = parser.parse_args()

    provider = ProviderProcess()  # SendGrid's send API on any path
    live_url = f"{provider.url}/v3/"
    dead_url = f"http://127.0.0.1:{free_port()}/v3/"  # nothing listens: connection refused
    configure(live_url, args.cache)

    import warnings

    from anymail.backends.sendgrid import EmailBackend as SendGridBackend
    from django.core.cache import cache
    from django.core.mail import EmailMessage

    from failover.backends import FirstWorkingEmailBackend

    warnings.simplefilter("ignore")
    live = {"NAME": "live", "BACKEND": "sendgrid", "OPTIONS": {"api_url": live_url}}
    dead = {"NAME": "dead", "BACKEND": "sendgrid", "OPTIONS": {"api_url": dead_url}}

    def messages(n):
        return [
            EmailMessage(subject=f"m{i}", body="x" * 200, from_email="a@example.com", to=["b@example.net"])
            for i in range(n)
        ]

    def direct_per_message(batch):
        for m in batch:
            SendGridBackend(api_url=live_url, timeout=(3.05, 15.0)).send_messages([m])

    def failover_per_message(chain):
        def run(batch):
            for m in batch:
                FirstWorkingEmailBackend(backends=chain).send_messages([m])

        return run

    def direct_batch(batch):
        SendGridBackend(api_url=live_url, timeout=(3.05, 15.0)).send_messages(batch)

    def failover_batch(chain):
        def run(batch):
            FirstWorkingEmailBackend(backends=chain).send_messages(batch)

        return run

    variants = {
        "direct, one connection per message": direct_per_message,
        "failover healthy, one connection per message": failover_per_message([live]),
        "failover dead primary, one connection per message": failover_per_message([dead, live]),
        "direct, one batch": direct_batch,
        "failover healthy, one batch": failover_batch([live]),
        "failover dead primary, one batch": failover_batch([dead, live]),
    }
    own_cost = backend_own_cost(messages)
    wall = {name: [] for name in variants}
    cpu = {name: [] for name in variants}
    names = list(variants)
    for round_no in range(args.rounds):
        for name in names if round_no % 2 == 0 else reversed(names):
            cache.clear()  # every round starts with no memory: the dead primary is found anew
            batch = messages(args.messages)
            gc.collect()  # close the previous variant's lingering connections outside the timing
            started, started_cpu = time.perf_counter(), time.process_time()
            variants[name](batch)
            providers = [getattr(m, "failover_provider", "live") for m in batch]
            # Count the clean-up too: a backend that leaves its sockets for the garbage
            # collector would otherwise look cheaper than one that closes them itself.
            del batch
            gc.collect()
            wall[name].append(time.perf_counter() - started)
            cpu[name].append(time.process_time() - started_cpu)
            assert set(providers) == {"live"}, name
    provider.close()

    print(
        f"{args.messages} messages per run, {args.rounds} rounds, cache={args.cache}, "
        f"Python {sys.version.split()[0]}, Django {django.get_version()}"
    )
    direct_send = statistics.median(wall["direct, one connection per message"]) / args.messages
    print(
        "the backend's own cost (inner backend that does nothing, 20,000 sends): "
        f"{own_cost['connection'] * 1e6:.1f} us per message with a connection each, "
        f"{own_cost['batch'] * 1e6:.1f} us per message in a batch; that is "
        f"{own_cost['connection'] / direct_send:.1%} and {own_cost['batch'] / direct_send:.1%} of one direct "
        "loopback send measured below"
    )
    for label, timings in (("wall", wall), ("sender CPU", cpu)):
        median = {name: statistics.median(values) for name, values in timings.items()}
        print(f"{label} time, median per message:")
        for name, value in median.items():
            print(f"  {name:<52} {value * 1e6 / args.messages:8.1f} us")
        print(f"{label} ratios (budget: healthy <= 1.03, dead primary <= 1.05):")
        for mode in ("one connection per message", "one batch"):
            base = median[f"direct, {mode}"]
            print(
                f"  {mode:<28} healthy/direct = {median[f'failover healthy, {mode}'] / base:.3f}"
                f"   dead-primary/direct-to-secondary = {median[f'failover dead primary, {mode}'] / base:.3f}"
            )


if __name__ == "__main__":
    main()
