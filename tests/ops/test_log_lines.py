"""Log lines an operator's tools can trust (docs/monitoring.md, "Logs"): with LOG_FORMAT=json
one JSON object per line per record, tracebacks and odd line breaks included; Python warnings
(Anymail's SendGrid notice) as one log record each, once per process, in either format."""

import io
import json
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

from django.test import SimpleTestCase

from smtest.logformat import JsonFormatter, capture_warnings, escape_controls

ROOT = Path(__file__).resolve().parents[2]
# In the child: records with every kind of line break, a traceback and a stack, then the
# SendGrid backend and webhook view built twice each (each warns on every construction).
PROBE = r"""
import logging, django
django.setup()
log = logging.getLogger("mailservice.probe")
log.warning("one\ntwo\rthree\u2028four\u2029five\x85six\x1bseven", extra={"field": "a\nb\u2028c"})
try:
    raise ValueError("first line\nsecond line")
except ValueError:
    log.exception("failed", stack_info=True)
from anymail.backends.sendgrid import EmailBackend
from anymail.webhooks.sendgrid import SendGridTrackingWebhookView
for _ in range(2):
    EmailBackend(api_key="SG.probe-key")  # built directly: Django 6.1's MAILERS refuses get_connection(path)
    SendGridTrackingWebhookView()
log.warning("done")
"""


def run_probe(**values: str) -> subprocess.CompletedProcess:
    keep = {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}
    env = {
        **keep,
        "DJANGO_SETTINGS_MODULE": "smtest.settings",
        "PYTHONDONTWRITEBYTECODE": "1",
        "DEBUG": "1",
        "ANYMAIL_WEBHOOK_SECRET": "hook:probe-secret",
        **values,
    }
    return subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


class JsonLinesTests(SimpleTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.result = run_probe(LOG_FORMAT="json")

    def lines(self) -> list[str]:
        self.assertEqual(self.result.returncode, 0, self.result.stderr)
        # str.splitlines() breaks at \x85, \u2028 and \u2029 too, as some log readers do.
        return self.result.stderr.splitlines()

    def test_each_record_is_one_json_line(self):
        """Every line of the output is one JSON object: line breaks in the message, the fields,
        the traceback and the stack are escaped, not written."""
        entries = [json.loads(line) for line in self.lines()]
        probe = [entry for entry in entries if entry["logger"] == "mailservice.probe"]
        self.assertEqual(
            [entry["message"].split("\n")[0] for entry in probe],
            [
                "one",
                "failed",
                "done",
            ],
        )
        self.assertEqual(probe[0]["message"], "one\ntwo\rthree\u2028four\u2029five\x85six\x1bseven")
        self.assertEqual(probe[0]["field"], "a\nb\u2028c")
        self.assertIn("ValueError: first line\nsecond line", probe[1]["exception"])
        self.assertIn("Stack (most recent call last)", probe[1]["stack"])

    def test_sendgrid_warning_is_one_json_record_once_per_process(self):
        """Anymail's AnymailNotSupportedWarning, raised at each construction, is one record of
        `py.warnings` for the whole process, with its category and source."""
        entries = [json.loads(line) for line in self.lines()]
        category = "anymail.exceptions.AnymailNotSupportedWarning"
        notices = [entry for entry in entries if entry.get("category") == category]
        self.assertEqual(len(notices), 1, entries)
        self.assertEqual((notices[0]["logger"], notices[0]["level"]), ("py.warnings", "WARNING"))
        self.assertTrue(
            notices[0]["message"].startswith("AnymailNotSupportedWarning: django-anymail has dropped")
        )
        self.assertRegex(notices[0]["source"], r"anymail/(backends|webhooks)/sendgrid\.py:\d+$")


class TextLinesTests(SimpleTestCase):
    def test_sendgrid_warning_is_one_text_line_once_per_process(self):
        """In text logs the warning is one line of `py.warnings`, written once, not Python's
        two-line notice on stderr."""
        result = run_probe(LOG_FORMAT="text")
        self.assertEqual(result.returncode, 0, result.stderr)
        lines = [line for line in result.stderr.splitlines() if "AnymailNotSupportedWarning" in line]
        self.assertEqual(len(lines), 1, result.stderr)
        self.assertRegex(
            lines[0], r" WARNING py\.warnings AnymailNotSupportedWarning: django-anymail has dropped "
        )
        self.assertNotIn("warnings.warn(", result.stderr)


class WarningCaptureTests(SimpleTestCase):
    def test_capture_is_installed_once_and_keeps_explicit_files(self):
        """Installing twice keeps one hook; a warning written to a file on purpose still goes there."""
        capture_warnings()
        hook = warnings.showwarning
        capture_warnings()
        self.assertIs(warnings.showwarning, hook)
        stream = io.StringIO()
        warnings.showwarning("to a file", UserWarning, "x.py", 3, file=stream)
        self.assertIn("x.py:3: UserWarning: to a file", stream.getvalue())


class EscapingTests(SimpleTestCase):
    def test_control_characters_are_escaped(self):
        """CR, LF, tab, ESC, DEL, C1 controls and the Unicode separators become escapes; the
        rest, non-ASCII letters included, is left as it is."""
        self.assertEqual(
            escape_controls("a\r\nb\tc\x1b[31md\x7fe\x85f\u2028g\u2029h é"),
            "a\\r\\nb\\tc\\x1b[31md\\x7fe\\x85f\\u2028g\\u2029h é",
        )

    def test_json_formatter_escapes_line_breaks_json_leaves_alone(self):
        """NEL and U+2028/U+2029 come out as \\u escapes, so the line splits nowhere."""
        stream = io.StringIO()
        handler = logging.StreamHandler(stream)
        handler.setFormatter(JsonFormatter())
        logger = logging.getLogger("smtest.tests.jsonlines")
        logger.addHandler(handler)
        logger.propagate = False
        try:
            logger.warning("a\x85b\u2028c\u2029d")
        finally:
            logger.removeHandler(handler)
        output = stream.getvalue()
        self.assertEqual(len(output.splitlines()), 1)
        self.assertIn(r'"message": "a\u0085b\u2028c\u2029d"', output)
        self.assertEqual(json.loads(output)["message"], "a\x85b\u2028c\u2029d")
