"""The sandbox as real processes: `python -m sandbox` and `manage.py sandbox`, driven by the CLI
and used by the real Anymail backends. Processes are stopped even when a test fails."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

from anymail.exceptions import AnymailRequestsAPIError
from django.core.mail import EmailMessage
from django.test import SimpleTestCase
from django.utils.module_loading import import_string

from sandbox.client import SandboxClient
from tests.sandbox.base import BACKENDS

ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT = 20.0
URL_LINE = re.compile(r"ANYMAIL_(\w+)_API_URL=(\S+)")
CONTROL_LINE = re.compile(r"control: (\S+)")


class ProcessTestCase(SimpleTestCase):
    def start(self, *command: str, env: dict[str, str] | None = None) -> tuple[str, dict[str, str]]:
        """Start a sandbox process; return its control URL and provider API URLs from its banner."""
        process = subprocess.Popen(
            [sys.executable, *command],
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.addCleanup(self.stop, process)
        lines: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:
            for line in process.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        control, urls = None, {}
        while len(urls) < 3:
            line = lines.get(timeout=STARTUP_TIMEOUT)
            if line is None:
                self.fail(f"sandbox exited early with code {process.wait()}")
            if match := CONTROL_LINE.search(line):
                control = match.group(1)
            if match := URL_LINE.search(line):
                urls[match.group(1).lower()] = match.group(2)
        self.process, self.lines = process, lines
        return control, urls

    def stop(self, process: subprocess.Popen) -> None:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        if process.stdout:
            process.stdout.close()

    def backend(self, urls: dict[str, str], name: str, key: str, **options):
        return import_string(BACKENDS[name])(api_key=key, api_url=urls[name], **options)

    def message(self) -> EmailMessage:
        return EmailMessage("Hello", "Body", "app@example.com", ["user@example.net"])


class PythonDashMTests(ProcessTestCase):
    def test_python_m_sandbox_serves_faults_from_the_cli_and_stops_on_sigterm(self):
        """A real `python -m sandbox`: send, set a fault with the CLI as a process, see it, stop cleanly."""
        control, urls = self.start("-m", "sandbox", "--port", "0", "--no-webhooks", "--fault", "mailgun:down")
        sendgrid = self.backend(urls, "sendgrid", "SG.sandbox-sendgrid-key")
        self.assertEqual(sendgrid.send_messages([self.message()]), 1)

        cli = subprocess.run(
            [sys.executable, "-m", "sandbox", "fault", "sendgrid", "503", "--url", control],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
        self.assertEqual(cli.returncode, 0, cli.stderr)
        with self.assertRaises(AnymailRequestsAPIError) as caught:
            sendgrid.send_messages([self.message()])
        self.assertEqual(caught.exception.status_code, 503)

        status = SandboxClient(control).status()
        self.assertFalse(status["providers"]["mailgun"]["listening"])  # started down
        self.assertEqual(len(SandboxClient(control).messages(provider="sendgrid")), 2)

        self.process.send_signal(signal.SIGTERM)
        self.assertEqual(self.process.wait(timeout=10), 0)


class ManagePyTests(ProcessTestCase):
    def test_manage_py_sandbox_accepts_the_projects_anymail_keys(self):
        """`manage.py sandbox` takes its keys from the project's ANYMAIL settings."""
        _, urls = self.start(
            "manage.py",
            "sandbox",
            "--port",
            "0",
            "--no-webhooks",
            env={"ANYMAIL_MANDRILL_API_KEY": "project-mandrill-key", "DEBUG": "1"},
        )
        mandrill = self.backend(urls, "mandrill", "project-mandrill-key")
        self.assertEqual(mandrill.send_messages([self.message()]), 1)
        with self.assertRaises(AnymailRequestsAPIError):
            self.backend(urls, "mandrill", "sandbox-mandrill-key").send_messages([self.message()])
