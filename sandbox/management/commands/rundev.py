"""`manage.py rundev`: what `make run` starts. Prints a development API key (the key named "dev"
is rotated on every start), then runs the web server, a delivery worker and the recovery loop
together, and, unless FIRST_WORKING_EMAIL_BACKENDS is set (in the environment or .env), the
provider sandbox with SendGrid, Mailgun and Mandrill all pointed at it. Ctrl-C (or SIGTERM)
stops them all.

It lives in the sandbox app, a development tool, because it starts the sandbox: the gateway's
own code (mailservice) never imports the sandbox, while the sandbox may use the gateway.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from failover.backends import FirstWorkingEmailBackend
from mailservice.services.keys import api_key_create
from sandbox.conf import CONFLICTING_VARIABLES, SandboxSettings, service_environment

STOP_TIMEOUT = 10.0


class Command(BaseCommand):
    help = "Development: web server on 127.0.0.1:8000, a db_worker and the recovery loop; Ctrl-C stops all."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--addr", default="127.0.0.1:8000", help="runserver's address:port")
        parser.add_argument("--key-name", default="dev", help="Name of the API key created (and rotated).")
        parser.add_argument(
            "--no-sandbox",
            action="store_true",
            help="Do not start the sandbox even when no providers are configured "
            "(the console backend then prints mail).",
        )

    def handle(self, *args: Any, addr: str, key_name: str, no_sandbox: bool, **options: Any) -> None:
        # Every scope: the banner's examples list providers and suppressions (manage).
        _, raw_key = api_key_create(name=key_name, rotate=True, scopes=("send", "read", "manage"))
        manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]
        commands = {
            "web": [*manage, "runserver", addr],
            # --no-reload: with DEBUG on, db_worker would run its loop in a reloader thread, and a
            # crash there would leave a live process that runs no tasks, unseen by the watch below.
            "worker": [*manage, "db_worker", "--interval", "0.5", "--no-reload"],
            "recovery": [*manage, "recover_messages", "--loop"],
        }
        child_env = dict(os.environ)
        # Providers configured (environment or .env, which settings has read into os.environ):
        # use them. Otherwise all three point at the local sandbox, so failover can be watched.
        use_sandbox = not no_sandbox and not os.environ.get("FIRST_WORKING_EMAIL_BACKENDS", "").strip()
        control_url = ""
        if use_sandbox:
            control_url = self._sandbox(commands, child_env, addr)
        self._banner(
            addr, raw_key, sandbox=control_url, chain=child_env.get("FIRST_WORKING_EMAIL_BACKENDS", "")
        )
        stopping = False

        def stop(signum: int, frame: Any) -> None:
            nonlocal stopping
            stopping = True

        # Before the first child starts, so no signal can leave children behind; SIGHUP too
        # (a closed terminal), since the children, in their own sessions, never see it.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, stop)
        children: dict[str, subprocess.Popen] = {}
        exited = None
        try:
            for name, command in commands.items():
                # Each child leads its own process group so a stop reaches its reloader's child too.
                children[name] = subprocess.Popen(
                    command, start_new_session=True, env=child_env, cwd=settings.BASE_DIR
                )
            while not stopping and exited is None:
                exited = next((name for name, child in children.items() if child.poll() is not None), None)
                time.sleep(0.2)
        finally:
            if exited:
                code = children[exited].returncode
                self.stderr.write(f"{exited} exited with code {code}; stopping the others.")
            self._stop(children)
        if exited:
            sys.exit(1)

    def _sandbox(self, commands: dict[str, list[str]], child_env: dict[str, str], addr: str) -> str:
        """Add the sandbox to `commands`, point the chain at it, start with a fresh memory."""
        # The sandbox reads SANDBOX_* (from the environment or .env); the service must be
        # pointed at the ports and keys the sandbox will really use.
        sandbox_settings = SandboxSettings.from_env(os.environ).with_overrides(webhook_url=f"http://{addr}")
        # Keys, secrets and the public key of the sandbox's SendGrid signatures (development
        # values): the service then verifies every webhook the sandbox posts, as in production.
        child_env.update(service_environment(sandbox_settings))
        for variable in CONFLICTING_VARIABLES:
            child_env.pop(variable, None)
        commands["sandbox"] = [sys.executable, "-m", "sandbox", "serve", "--webhook-url", f"http://{addr}"]
        # A fresh sandbox has no faults: forget what the last run's failover learned about them.
        FirstWorkingEmailBackend(backends=child_env["FIRST_WORKING_EMAIL_BACKENDS"].split(",")).forget()
        return f"http://{sandbox_settings.host}:{sandbox_settings.port}/_sandbox/"

    def _stop(self, children: dict[str, subprocess.Popen]) -> None:
        for child in children.values():
            # db_worker finishes its task first; runserver and its reloader exit.
            _signal_group(child, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for child in children.values():
            try:
                child.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                _signal_group(child, signal.SIGKILL)
                child.wait()
        self.stdout.write(f"Stopped {', '.join(children)}.")

    def _banner(self, addr: str, raw_key: str, *, sandbox: str, chain: str) -> None:
        base = f"http://{addr}"
        auth = '-H "Authorization: Bearer $SMTEST_KEY"'
        if sandbox:
            primary, secondary = chain.split(",")[:2]
            providers = (
                f"Providers: {chain.replace(',', ', ')}, in that order, all answered by the local sandbox\n"
                f"(control API {sandbox}; docs/sandbox.md). Put real keys and\n"
                "FIRST_WORKING_EMAIL_BACKENDS in .env to use the real providers instead."
            )
            failover = f"""
  # Watch the failover: make the primary fail, send again, see who took it
  export SANDBOX_URL={sandbox}
  .venv/bin/python -m sandbox fault {primary} down
  curl -s -X POST {base}/api/messages {auth} -H 'Content-Type: application/json' \\
       -d '{{"to": "someone@example.com", "subject": "Second", "text": "Via the secondary."}}'
  curl -s {base}/api/providers {auth}
  .venv/bin/python -m sandbox messages --provider {secondary}
  .venv/bin/python -m sandbox fault {primary} clear
  # bounce+x@example.com bounces and complain+x@example.com complains (webhooks after 1 s):
  # the address lands on {base}/api/suppressions and the next message to it reaches no provider.
"""
        else:
            providers = f"Providers (FIRST_WORKING_EMAIL_BACKENDS): {chain or 'see settings'}"
            failover = ""
        self.stdout.write(
            f"""
Development API key (new on every start): {raw_key}
{providers}

  export SMTEST_KEY={raw_key}
  curl -s -X POST {base}/api/messages {auth} \\
       -H 'Content-Type: application/json' \\
       -d '{{"to": "someone@example.com", "subject": "Hello", "text": "It works."}}'
  curl -s {base}/api/messages/<id> {auth}
  curl -s "{base}/?to=someone@example.com" {auth}
{failover}
API docs: {base}/api/docs   Ctrl-C stops everything started here.
""",
        )
        self.stdout.flush()


def _signal_group(child: subprocess.Popen, signum: int) -> None:
    if child.poll() is not None:
        return
    try:
        os.killpg(child.pid, signum)
    except ProcessLookupError:
        pass
