"""`python -m sandbox [serve] [flags]` runs the sandbox; the other subcommands talk to a running one.

python -m sandbox                                 # serve on 127.0.0.1:8025 (+ 8026-8028)
python -m sandbox --fault mailgun:down            # start with a fault
python -m sandbox fault sendgrid 503              # set a fault on a running sandbox
python -m sandbox fault sendgrid clear
python -m sandbox messages --provider mailgun
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from sandbox.app import Sandbox
from sandbox.client import SandboxClient, default_url
from sandbox.conf import SandboxSettings
from sandbox.exceptions import SandboxError
from sandbox.faults import KINDS, Fault, fault_from_words, parse_fault_flag
from sandbox.providers import PROVIDER_NAMES, PROVIDERS
from sandbox.store import ReplyKind

SUBCOMMANDS = ("serve", "fault", "faults", "messages", "clear", "webhooks", "flush", "reset", "status")


# Serving ---------------------------------------------------------------------------------


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `python -m sandbox serve`, shared with `manage.py sandbox`."""
    add = parser.add_argument
    add("--host", help="Loopback address to bind (default 127.0.0.1; SANDBOX_HOST).")
    add("--port", type=int, help="Control API port (default 8025; 0 = any free port; SANDBOX_PORT).")
    for index, spec in enumerate(PROVIDERS, start=1):
        name = spec.name
        add(
            f"--{name}-port",
            type=int,
            dest=f"{name}_port",
            help=f"Port of the {name} API (default: control port + {index}; {spec.variable('PORT')}).",
        )
        add(
            f"--{name}-key",
            dest=f"{name}_key",
            help=f"API key the {name} API accepts (default {spec.default_api_key!r}; "
            f"{spec.variable('API_KEY')}).",
        )
    for spec in PROVIDERS:
        if spec.sender_domain_setting:
            add(
                f"--{spec.name}-domain",
                action="append",
                dest=f"{spec.name}_domains",
                help=f"A {spec.name} sender domain that exists (repeatable); default: every domain exists.",
            )
    add("--webhook-url", help="Base URL of the service receiving webhooks (default http://127.0.0.1:8000).")
    add("--no-webhooks", action="store_true", help="Post no tracking webhooks.")
    add("--webhook-delay", type=float, help="Seconds from accepting a message to its webhooks (default 1).")
    add("--max-messages", type=int, help="How many received messages to keep (default 1000).")
    add("--seed", type=int, help="Seed of error-rate faults that name none (repeatable runs).")
    add(
        "--fault",
        action="append",
        default=[],
        metavar="PROVIDER:KIND[:VALUE]",
        help="Start with a fault: mailgun:down, sendgrid:503, mandrill:slow:2000, sendgrid:error-rate:0.3.",
    )
    add("--log-level", default="INFO", help="Logging level of the sandbox (default INFO).")


def settings_from_options(
    options: Mapping[str, Any], environ: Mapping[str, str], **fallbacks: Any
) -> tuple[SandboxSettings, dict[str, Fault]]:
    """Flags over SANDBOX_* variables over `fallbacks` over the defaults; plus the start faults."""
    settings = SandboxSettings.from_env(environ, **fallbacks)
    names = PROVIDER_NAMES
    ports = {name: options[f"{name}_port"] for name in names if options.get(f"{name}_port") is not None}
    keys = {name: options[f"{name}_key"] for name in names if options.get(f"{name}_key")}
    domains = {name: tuple(options[f"{name}_domains"]) for name in names if options.get(f"{name}_domains")}
    settings = settings.with_overrides(
        host=options.get("host"),
        port=options.get("port"),
        provider_ports=ports or None,
        api_keys=keys or None,
        sender_domains=domains or None,
        webhook_url="" if options.get("no_webhooks") else options.get("webhook_url"),
        webhook_delay=options.get("webhook_delay"),
        max_messages=options.get("max_messages"),
        seed=options.get("seed"),
    )
    faults = dict(parse_fault_flag(flag, seed=settings.seed) for flag in options.get("fault") or [])
    return settings, faults


def serve(
    settings: SandboxSettings,
    faults: dict[str, Fault] | None = None,
    *,
    out: TextIO = sys.stdout,
    stop: threading.Event | None = None,
) -> int:
    """Run until SIGINT/SIGTERM (or `stop` is set); prints where everything is."""
    stop = stop or threading.Event()
    sandbox = Sandbox(settings, faults=faults)
    sandbox.start()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
    try:
        _emit(out, banner(sandbox))
        stop.wait()
    finally:
        sandbox.stop()
        _emit(out, "sandbox stopped")
    return 0


def _emit(out: TextIO, text: str) -> None:
    out.write(text + "\n")  # one write: Django's OutputWrapper adds a newline to each write
    out.flush()


def banner(sandbox: Sandbox) -> str:
    """Where each API is, and the ANYMAIL_* lines that point a service at it. Keys and secrets
    are printed only when they are the documented sandbox defaults."""
    settings = sandbox.settings
    lines = [f"smtest sandbox (loopback only) control: {sandbox.control_url}"]
    for name in PROVIDER_NAMES:
        lines.append(f"  {name:<9} {sandbox.api_url(name)}   fault: {sandbox.faults.get(name).describe()}")
    if settings.webhook_url:
        lines.append(f"  webhooks  to {settings.webhook_url}/anymail/... after {settings.webhook_delay:g} s")
    else:
        lines.append("  webhooks  off")
    lines.append("Point the service at it:")
    public = public_defaults()
    for key, value in sandbox.anymail_settings().items():
        shown = value if key.endswith("_API_URL") or value in public else "<as configured>"
        lines.append(f"  ANYMAIL_{key}={shown}")
    lines.append("Faults: python -m sandbox fault mailgun down | fault sendgrid 503 | fault mailgun clear")
    return "\n".join(lines)


def public_defaults() -> frozenset[str]:
    """The default keys and secrets: development values, published in docs/sandbox.md."""
    defaults = SandboxSettings()
    verification_keys = [value for spec in PROVIDERS for _setting, value in spec.webhook_verification]
    return frozenset(
        [
            *defaults.api_keys.values(),
            *defaults.webhook_keys.values(),
            defaults.webhook_secret,
            *verification_keys,
        ]
    )


# Talking to a running sandbox -------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox",
        description="Local SendGrid, Mailgun and Mandrill APIs with fault injection (docs/sandbox.md).",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_serve_arguments(commands.add_parser("serve", help="Run the sandbox (the default command)."))

    def client_command(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help)
        sub.add_argument("--url", help=f"The running sandbox's control URL (default {default_url()}).")
        return sub

    fault = client_command("fault", "Set or clear one provider's fault.")
    fault.add_argument("provider", choices=PROVIDER_NAMES)
    fault.add_argument("kind", nargs="?", help=f"{', '.join(KINDS)}, or an HTTP status (503, 429...)")
    fault.add_argument("value", nargs="?", help="status, delay/hold in ms, error share 0-1, or address globs")
    fault.add_argument("--retry-after", type=int, help="Retry-After seconds (429 defaults to 1).")
    fault.add_argument("--seed", type=int, help="Seed of an error-rate fault.")
    fault.add_argument("--status", type=int, help="Status of an error-rate fault's failures (default 503).")
    fault.add_argument("--hold-ms", type=int, help="How long timeout holds the answer (default 60000)")
    fault.add_argument("--json", dest="as_json", help="The whole fault as JSON (see docs/sandbox.md).")
    client_command("faults", "Show every provider's fault.")
    messages = client_command("messages", "List received messages as JSON.")
    messages.add_argument("--provider", choices=PROVIDER_NAMES)
    messages.add_argument("--recipient")
    messages.add_argument("--outcome", choices=[str(kind) for kind in ReplyKind])
    messages.add_argument("--limit", type=int)
    clear = client_command("clear", "Forget received messages.")
    clear.add_argument("--provider", choices=PROVIDER_NAMES)
    client_command("webhooks", "Show pending and posted webhooks.")
    client_command("flush", "Post every pending webhook now.")
    client_command("reset", "Clear faults, messages and webhooks.")
    client_command("status", "Show where everything is and each provider's fault.")
    return parser


def run_client_command(args: argparse.Namespace, out: TextIO) -> int:
    client = SandboxClient(args.url)
    if args.command == "fault":
        if args.as_json:
            try:
                spec: Any = json.loads(args.as_json)
            except ValueError as err:
                raise SandboxError(f"--json is not valid JSON: {err}") from None
            result = client.set_fault(args.provider, Fault.from_json(spec))
        elif not args.kind:
            raise SandboxError(f"Say which fault: one of {', '.join(KINDS)}, an HTTP status, or --json.")
        else:
            fault = fault_from_words(
                args.kind,
                args.value,
                retry_after=args.retry_after,
                seed=args.seed,
                status=args.status,
                hold_ms=args.hold_ms,
            )
            result = client.set_fault(args.provider, fault)
        _print({args.provider: result}, out)
    elif args.command == "faults":
        _print(client.faults(), out)
    elif args.command == "messages":
        _print(
            client.messages(
                provider=args.provider, recipient=args.recipient, outcome=args.outcome, limit=args.limit
            ),
            out,
        )
    elif args.command == "clear":
        _print({"deleted": client.clear_messages(args.provider)}, out)
    elif args.command == "webhooks":
        _print(client.webhooks(), out)
    elif args.command == "flush":
        _print({"posted": client.flush_webhooks()}, out)
    elif args.command == "reset":
        _print(client.reset(), out)
    else:
        _print(client.status(), out)
    return 0


def _print(data: Any, out: TextIO) -> None:
    _emit(out, json.dumps(data, indent=2))


def main(argv: Sequence[str] | None = None, *, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in SUBCOMMANDS and argv[0] not in ("-h", "--help")):
        argv.insert(0, "serve")
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            configure_logging(args.log_level)
            settings, faults = settings_from_options(vars(args), os.environ)
            return serve(settings, faults, out=out)
        return run_client_command(args, out)
    except SandboxError as error:
        print(f"sandbox: {error}", file=err)
        return 2
    except OSError as error:  # e.g. the port is taken
        print(f"sandbox: cannot listen: {error}", file=err)
        return 2


def configure_logging(level: str) -> None:
    """INFO by default: one line per request, webhook and fault change is what a developer watches.
    Under Django (`manage.py sandbox`) the project's LOGGING handlers are kept."""
    sandbox_logger = logging.getLogger("sandbox")
    sandbox_logger.setLevel(level.upper())
    if not logging.getLogger().handlers and not sandbox_logger.handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s %(message)s")
