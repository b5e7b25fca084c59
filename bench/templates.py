"""Accepting a message made from a stored template, against accepting a plain one, through the API.

The template is the one the template tests use (tests/templates/fixtures.py): an order receipt,
a ~20 KB HTML layout with a `<style>` block, media queries, loops and optional parts, no text
part (it is made from the HTML), created with `POST /api/templates` and rendered with fresh
`template_data` for each message.

One process, set up as bench/delivery.py sets up smtest's (its environment: settings from the
environment alone, DEBUG off, INFO logs, the database task queue, a file cache), on a throwaway
SQLite file, with the API's rate limit off. Each message is posted to `POST /api/messages` by
Django's test client (the whole accept: middleware, API key, parsing, validation, rendering,
storing; no network, no WSGI server), and must be answered 202:

- **plain**: bench/delivery.py's message (one recipient, a subject, a 260-character text);
- **same content**: the template's output for that message (subject, text, inlined HTML) given as
  the message's own content: a plain message as large as a templated one;
- **templated**: `template`, `language` and `template_data` (about 2 KB of JSON), rendered by the
  gateway as it accepts the message.

Where a render's time goes is timed without HTTP: `template_resolve` + `render` (what the
accept adds), and two of its parts alone, `template_resolve` (one query) and `html_to_text` on
the rendered HTML (the text part a template without one gets).

Each round runs every measurement in a rotated order, on an emptied outbox, from a collected
heap; the figures are the medians over the rounds, and each ratio is the median of the rounds'
ratios. docs/benchmarks.md has the results.

Run: .venv/bin/python bench/templates.py [--messages 200] [--rounds 7] [--keep]
"""

from __future__ import annotations

import argparse
import datetime
import functools
import gc
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.delivery import FROM, markdown, message_fields, number, smtest_env, versions  # noqa: E402

TEMPLATE_NAME = "receipt"
LANGUAGE = "en"
# Nothing is sent: no variant reaches the provider, whose address the settings still need.
UNUSED_PROVIDER_URL = "http://127.0.0.1:9/v3/"
VARIANTS = ["plain", "same content", "templated", "render only"]
# Parts of a render timed alone, to say where its time goes (ms per message).
STEPS = ["resolve", "text part"]
# (label, numerator, denominator): a ratio of rates, > 1 when the numerator is faster.
RATIOS = [
    ("templated / same content: what rendering adds", "templated", "same content"),
    ("templated / plain", "templated", "plain"),
    ("same content / plain: what the larger message adds", "same content", "plain"),
]


# The measuring process (`--role measure`) ------------------------------------------------------


def template_data(i: int) -> dict:
    """The fixture's data, different for each message, as each receipt is."""
    from tests.templates.fixtures import layout_data

    data = layout_data()
    data["order"]["number"] = f"A-{10_000 + i}"
    data["user"]["first_name"] = f"Customer {i}"
    return data


def role_measure(args) -> None:
    import warnings

    import django

    warnings.simplefilter("ignore")
    django.setup()
    from django.core.management import call_command
    from django.test import Client
    from django.test.utils import setup_test_environment

    from mailservice.models import Message
    from mailservice.services.keys import api_key_create
    from mailservice.services.templates import template_resolve
    from mailservice.templating import html_to_text, render
    from tests.templates.fixtures import LAYOUT_HTML, LAYOUT_SUBJECT, LAYOUT_TEXT

    setup_test_environment()  # the test client's host, `testserver`, is allowed
    call_command("migrate", verbosity=0, interactive=False)
    _, raw_key = api_key_create(name="bench", scopes=("send", "manage"))
    client = Client(HTTP_AUTHORIZATION=f"Bearer {raw_key}")

    def post(path: str, body: str, status: int) -> None:
        response = client.post(path, body, content_type="application/json")
        if response.status_code != status:
            raise RuntimeError(f"POST {path} answered {response.status_code}: {response.content[:2000]!r}")

    template = {"name": TEMPLATE_NAME, "language": LANGUAGE, "subject": LAYOUT_SUBJECT}
    template.update(text=LAYOUT_TEXT, html=LAYOUT_HTML, description="bench/templates.py")
    post("/api/templates", json.dumps(template), 201)

    n = args.messages
    data = [template_data(i) for i in range(n)]
    outputs = [render(template_resolve(name=TEMPLATE_NAME, language=LANGUAGE), data[i]) for i in range(n)]
    bodies = {
        "plain": [{"from": FROM, **message_fields(i)} for i in range(n)],
        "same content": [
            {
                "from": FROM,
                "to": f"rcpt{i}@example.net",
                "subject": out.subject,
                "text": out.text,
                "html": out.html,
            }
            for i, out in enumerate(outputs)
        ],
        "templated": [
            {
                "from": FROM,
                "to": f"rcpt{i}@example.net",
                "template": TEMPLATE_NAME,
                "language": LANGUAGE,
                "template_data": data[i],
            }
            for i in range(n)
        ],
    }
    encoded = {name: [json.dumps(body) for body in listed] for name, listed in bodies.items()}

    def post_all(name: str) -> None:
        for body in encoded[name]:
            post("/api/messages", body, 202)

    def render_only() -> None:
        for values in data:
            render(template_resolve(name=TEMPLATE_NAME, language=LANGUAGE), values)

    def resolve_only() -> None:
        for _ in range(n):
            template_resolve(name=TEMPLATE_NAME, language=LANGUAGE)

    def text_part() -> None:
        for out in outputs:
            html_to_text(out.html)

    calls: dict[str, Callable[[], None]] = {
        **{name: functools.partial(post_all, name) for name in bodies},
        "render only": render_only,
        "resolve": resolve_only,
        "text part": text_part,
    }
    for name in bodies:  # warm-up: each path once, its first queries and compiled template
        post("/api/messages", encoded[name][0], 202)
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    order = list(calls)
    for round_ in range(args.rounds):
        shift = round_ % len(order)
        for name in order[shift:] + order[:shift]:
            Message.objects.all().delete()  # each variant on an empty outbox
            gc.collect()
            started = time.perf_counter()
            calls[name]()
            seconds[name].append(time.perf_counter() - started)
        print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    sizes = {
        "html": statistics.median(len(out.html.encode()) for out in outputs),
        "text": statistics.median(len(out.text.encode()) for out in outputs),
        "source": len(LAYOUT_HTML.encode()),
    }
    print(json.dumps({"seconds": seconds, "sizes": sizes}))


# The run -----------------------------------------------------------------------------------------


def measure(args, workdir: Path) -> dict:
    env = smtest_env(workdir / "bench.sqlite3", cache=workdir / "cache", provider_url=UNUSED_PROVIDER_URL)
    # Plain HTTP from the test client, and no rate limit: its 600 a minute would be what is measured.
    env.update({"SECURE_SSL_REDIRECT": "0", "MAILSERVICE_API_RATE_LIMIT": "0"})
    log = workdir / "measure.log"
    argv = [sys.executable, str(Path(__file__).resolve()), "--role", "measure"]
    argv += ["--messages", str(args.messages), "--rounds", str(args.rounds)]
    with open(log, "wb") as stderr:
        done = subprocess.run(
            argv,
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=stderr,
            timeout=60 + args.messages * args.rounds,
        )
    if done.returncode != 0:
        raise RuntimeError(f"the measuring process failed ({done.returncode}):\n{log.read_text()[-3000:]}")
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


def report(results: dict, args, load_before: str, elapsed: float) -> list[str]:
    n, v = args.messages, versions()
    rates = {name: [n / s for s in results["seconds"][name]] for name in [*VARIANTS, *STEPS]}
    sizes = results["sizes"]
    lines = [
        f"{datetime.date.today().isoformat()}, commit {v.get('commit', '?')}; {os.cpu_count()} cores "
        f"({platform.processor() or platform.machine()}), Linux {platform.release()}; "
        f"Python {platform.python_version()}, Django {v['django']}; SQLite {sqlite3.sqlite_version} "
        f"(WAL, synchronous=NORMAL); N = {n} messages per variant, {args.rounds} rounds; "
        f"load average before the run {load_before}; the whole run took {elapsed:.0f} s.",
        "",
        f"The template: {sizes['source']:,} bytes of HTML source; rendered, {sizes['html']:,.0f} bytes of "
        f"HTML with its CSS inlined and {sizes['text']:,.0f} bytes of text made from it (medians).",
        "",
    ]
    labels = {
        "plain": "plain: bench/delivery.py's message (260-character text)",
        "same content": "same content: the rendered subject, text and HTML given as the message's own",
        "templated": "templated: `template` + `template_data`, rendered as it is accepted",
        "render only": "no HTTP: `template_resolve` + `render` alone, nothing stored",
    }
    rows = []
    for name in VARIANTS:
        per = rates[name]
        median = statistics.median(per)
        rows.append(
            [
                labels[name],
                f"{number(median)} ({number(min(per))}–{number(max(per))})",
                f"{1000 / median:.2f}",
            ]
        )
    head = [
        "`POST /api/messages` → 202, test client",
        "msg/s (median of the rounds; range)",
        "ms per message",
    ]
    lines += markdown(head, rows)
    rows = []
    for label, top, bottom in RATIOS:
        per_round = [a / b for a, b in zip(rates[top], rates[bottom], strict=True)]
        rows.append([label, f"{statistics.median(per_round):.2f}×"])
    lines += markdown(["ratio of rates (median of the rounds' ratios)", ""], rows)
    per_message = {name: 1000 / statistics.median(rates[name]) for name in [*VARIANTS, *STEPS]}
    rest = per_message["render only"] - per_message["resolve"] - per_message["text part"]
    rows = [
        ["`template_resolve` (one query)", f"{per_message['resolve']:.2f}"],
        ["the parts rendered and the CSS inlined (the rest)", f"{rest:.2f}"],
        ["the text part made from the HTML (`html_to_text`)", f"{per_message['text part']:.2f}"],
        ["render only, in all", f"{per_message['render only']:.2f}"],
    ]
    lines += markdown(["where a render's time goes", "ms per message"], rows)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200, help="N per variant and round (default 200)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds; the figures are medians (default 7)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (database, log)")
    parser.add_argument("--role", choices=["measure"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "measure":
        role_measure(args)
        return

    begun = time.monotonic()
    load_before = " ".join(f"{load:.2f}" for load in os.getloadavg())
    workdir = Path(tempfile.mkdtemp(prefix="smtest-bench-templates-"))
    print(
        f"work directory {workdir}; {args.rounds} rounds of {args.messages} messages per variant", flush=True
    )
    try:
        results = measure(args, workdir)
    except BaseException:
        args.keep = True
        print(f"\nfailed; the log and database kept in {workdir}", file=sys.stderr)
        raise
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    print("\n".join(report(results, args, load_before, time.monotonic() - begun)))


if __name__ == "__main__":
    main()
