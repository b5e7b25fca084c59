"""`manage.py rundev`: what `make run` starts. Prints a development API key (the key named "dev"
is rotated on every start), then runs the web server, a delivery worker and the recovery loop
together, and, unless FIRST_WORKING_EMAIL_BACKENDS is set (in the environment or .env), the
provider sandbox with SendGrid, Mailgun and Mandrill all pointed at it. Ctrl-C (or SIGTERM)
stops them all."""
import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand

from mailservice.services import api_key_create

STOP_TIMEOUT = 10.0


class Command(BaseCommand):
    help = "Development: web server on 127.0.0.1:8000, a db_worker and the recovery loop; Ctrl-C stops all."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--addr", default="127.0.0.1:8000", help="runserver's address:port")
        parser.add_argument("--key-name", default="dev", help="Name of the API key created (and rotated).")
        parser.add_argument(
            "--no-sandbox",
            action="store_true",
            help="Do not start the sandbox even when no providers are configured (the console backend then prints mail).",
        )

    def handle(self, *args, addr: str, key_name: str, no_sandbox: bool, **options) -> None:
        _, raw_key = api_key_create(name=key_name, rotate=True)
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
        use_sandbox = not no_sandbox and "FIRST_WORKING_EMAIL_BACKENDS" not in os.environ
        if use_sandbox:
            from sandbox.conf import service_environment  # development only: never imported in production

            child_env.update(service_environment())
            commands["sandbox"] = [sys.executable, "-m", "sandbox", "serve", "--webhook-url", f"http://{addr}"]
        self._banner(addr, raw_key, sandbox=use_sandbox, chain=child_env.get("FIRST_WORKING_EMAIL_BACKENDS", ""))
        # Each child leads its own process group so a stop reaches its reloader's child too.
        children = {
            name: subprocess.Popen(command, start_new_session=True, env=child_env)
            for name, command in commands.items()
        }
        stopping = False

        def stop(signum, frame):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        exited = None
        while not stopping and exited is None:
            exited = next((name for name, child in children.items() if child.poll() is not None), None)
            time.sleep(0.2)
        if exited:
            self.stderr.write(f"{exited} exited with code {children[exited].returncode}; stopping the others.")
        self._stop(children)
        if exited:
            sys.exit(1)

    def _stop(self, children: dict[str, subprocess.Popen]) -> None:
        for child in children.values():
            _signal_group(child, signal.SIGTERM)  # db_worker finishes its task first; runserver and its reloader exit
        deadline = time.monotonic() + STOP_TIMEOUT
        for child in children.values():
            try:
                child.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                _signal_group(child, signal.SIGKILL)
                child.wait()
        self.stdout.write(f"Stopped {', '.join(children)}.")

    def _banner(self, addr: str, raw_key: str, *, sandbox: bool, chain: str) -> None:
        base = f"http://{addr}"
        auth = '-H "Authorization: Bearer $SMTEST_KEY"'
        if sandbox:
            providers = (
                "Providers: sendgrid, mailgun, mandrill, in that order, all answered by the local sandbox\n"
                "(control API http://127.0.0.1:8025/_sandbox/; docs/sandbox.md). Put real keys and\n"
                "FIRST_WORKING_EMAIL_BACKENDS in .env to use the real providers instead."
            )
            failover = f"""
  # Watch the failover: make the primary fail, send again, see who took it
  .venv/bin/python -m sandbox fault sendgrid down
  curl -s -X POST {base}/api/messages {auth} -H 'Content-Type: application/json' \\
       -d '{{"to": "someone@example.com", "subject": "Second", "text": "Via the secondary."}}'
  curl -s {base}/api/providers {auth}
  .venv/bin/python -m sandbox messages --provider mailgun
  .venv/bin/python -m sandbox fault sendgrid clear
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
