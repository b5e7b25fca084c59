"""`manage.py rundev`: what `make run` starts. Prints a development API key (the key named "dev"
is rotated on every start), then runs the web server, a delivery worker and the recovery loop
together; Ctrl-C (or SIGTERM) stops all three."""
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

    def handle(self, *args, addr: str, key_name: str, **options) -> None:
        _, raw_key = api_key_create(name=key_name, rotate=True)
        self._banner(addr, raw_key)
        manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]
        commands = {
            "web": [*manage, "runserver", addr],
            "worker": [*manage, "db_worker", "--interval", "0.5"],
            "recovery": [*manage, "recover_messages", "--loop"],
        }
        # Each child leads its own process group so a stop reaches its reloader's child too.
        children = {
            name: subprocess.Popen(command, start_new_session=True) for name, command in commands.items()
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
        self.stdout.write("Stopped web, worker and recovery.")

    def _banner(self, addr: str, raw_key: str) -> None:
        base = f"http://{addr}"
        self.stdout.write(
            f"""
Development API key (new on every start): {raw_key}

  export SMTEST_KEY={raw_key}
  curl -s -X POST {base}/api/messages -H "Authorization: Bearer $SMTEST_KEY" \\
       -H 'Content-Type: application/json' \\
       -d '{{"to": "someone@example.com", "subject": "Hello", "text": "It works."}}'
  curl -s {base}/api/messages/<id> -H "Authorization: Bearer $SMTEST_KEY"
  curl -s "{base}/?to=someone@example.com" -H "Authorization: Bearer $SMTEST_KEY"

API docs: {base}/api/docs   Ctrl-C stops the web server, the worker and the recovery loop.
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
