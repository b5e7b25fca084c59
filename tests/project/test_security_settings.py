"""Production security from the environment (docs/security.md, "Deployment settings"): with
DEBUG off the defaults are the secure ones and `check --deploy` passes with only the required
variables; a plain-HTTP local run works with SECURE_SSL_REDIRECT=0 and SECURE_HSTS_SECONDS=0.

Each case runs the project's own settings (smtest.settings, not the tests') in a subprocess with
a clean environment, so nothing of the developer's shell leaks in."""

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

from django.test import SimpleTestCase

ROOT = Path(__file__).resolve().parents[2]
REQUIRED = {
    "DEBUG": "0",
    "SECRET_KEY": secrets.token_urlsafe(50),
    "ALLOWED_HOSTS": "gateway.example.com,testserver",
    "ANYMAIL_WEBHOOK_SECRET": "esp:" + secrets.token_urlsafe(24),
}
SECURITY_SETTINGS = (
    "SECURE_SSL_REDIRECT",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_HSTS_PRELOAD",
    "SESSION_COOKIE_SECURE",
    "CSRF_COOKIE_SECURE",
    "SECURE_PROXY_SSL_HEADER",
)
# In the child: the project's settings, then a plain request through Django's test client.
PROBE = """
import json, django
from django.conf import settings
django.setup()
from django.test import Client
client = Client()
kwargs = json.loads(%r)
response = client.get("/api/openapi.json", **kwargs)
print(json.dumps({
    "settings": {name: getattr(settings, name) for name in %r},
    "status": response.status_code,
    "location": response.get("Location"),
    "hsts": response.get("Strict-Transport-Security"),
}))
"""


def clean_environment(**values: str) -> dict[str, str]:
    keep = {name: os.environ[name] for name in ("PATH", "HOME", "LANG", "SYSTEMROOT") if name in os.environ}
    return {**keep, "DJANGO_SETTINGS_MODULE": "smtest.settings", "PYTHONDONTWRITEBYTECODE": "1", **values}


def run(args: list[str], **values: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=clean_environment(**values),
        capture_output=True,
        text=True,
        timeout=120,
    )


def probe(headers: dict | None = None, **values: str) -> dict:
    code = PROBE % (json.dumps(headers or {}), SECURITY_SETTINGS)
    result = run(["-c", code], **values)
    if result.returncode:
        raise AssertionError(result.stderr)
    return json.loads(result.stdout.strip().splitlines()[-1])


class DeploySecurityTests(SimpleTestCase):
    def test_check_deploy_passes_with_only_the_required_variables(self):
        """DEBUG=0, SECRET_KEY, ALLOWED_HOSTS and the webhook secret: no deploy warning at all."""
        result = run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], **REQUIRED)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("no issues", result.stdout)

    def test_debug_off_defaults_are_secure(self):
        """With DEBUG off and nothing else set, HTTPS is enforced and cookies are secure."""
        found = probe(**REQUIRED)
        self.assertEqual(
            found["settings"],
            {
                "SECURE_SSL_REDIRECT": True,
                "SECURE_HSTS_SECONDS": 31536000,
                "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
                "SECURE_HSTS_PRELOAD": True,
                "SESSION_COOKIE_SECURE": True,
                "CSRF_COOKIE_SECURE": True,
                "SECURE_PROXY_SSL_HEADER": None,
            },
        )
        # A plain-HTTP request is sent to HTTPS.
        self.assertEqual(found["status"], 301)
        self.assertTrue(found["location"].startswith("https://"))

    def test_plain_http_local_run_with_debug_off(self):
        """SECURE_SSL_REDIRECT=0 and SECURE_HSTS_SECONDS=0: a plain-HTTP call gets 200, no HSTS."""
        found = probe(**REQUIRED, SECURE_SSL_REDIRECT="0", SECURE_HSTS_SECONDS="0")
        self.assertEqual((found["status"], found["hsts"]), (200, None))

    def test_behind_a_tls_proxy(self):
        """SECURE_PROXY_SSL_HEADER: a request the proxy marks as HTTPS is served, with HSTS."""
        found = probe(
            {"HTTP_X_FORWARDED_PROTO": "https"},
            **REQUIRED,
            SECURE_PROXY_SSL_HEADER="HTTP_X_FORWARDED_PROTO,https",
        )
        self.assertEqual(found["settings"]["SECURE_PROXY_SSL_HEADER"], ["HTTP_X_FORWARDED_PROTO", "https"])
        self.assertEqual(found["status"], 200)
        self.assertIn("max-age=31536000", found["hsts"])
        self.assertIn("includeSubDomains", found["hsts"])

    def test_each_setting_can_be_changed(self):
        """Every default can be overridden from the environment."""
        found = probe(
            **REQUIRED,
            SECURE_HSTS_SECONDS="3600",
            SECURE_HSTS_INCLUDE_SUBDOMAINS="0",
            SECURE_HSTS_PRELOAD="0",
            SESSION_COOKIE_SECURE="0",
            CSRF_COOKIE_SECURE="0",
        )["settings"]
        self.assertEqual([found[name] for name in SECURITY_SETTINGS[1:6]], [3600, False, False, False, False])

    def test_debug_on_defaults_suit_plain_http(self):
        """With DEBUG on nothing redirects or pins HTTPS: `make run` serves plain HTTP."""
        found = probe(DEBUG="1")
        self.assertEqual(found["status"], 200)
        self.assertFalse(any(found["settings"][name] for name in SECURITY_SETTINGS))


class SecretKeyTests(SimpleTestCase):
    """SECRET_KEY signs admin sessions: with DEBUG off there is no published fallback."""

    def test_debug_off_without_secret_key_refuses_to_start(self):
        """DEBUG off and no SECRET_KEY (unset or blank): every command stops, naming SECRET_KEY."""
        settings = {name: value for name, value in REQUIRED.items() if name != "SECRET_KEY"}
        for value in (None, "", "  "):
            with self.subTest(SECRET_KEY=value):
                extra = {} if value is None else {"SECRET_KEY": value}
                result = run(["manage.py", "check"], **settings, **extra)
                self.assertNotEqual(result.returncode, 0, result.stdout)
                self.assertIn("ImproperlyConfigured: SECRET_KEY is not set and DEBUG is off", result.stderr)

    def test_debug_on_runs_on_the_development_key(self):
        """`make run` (DEBUG=1) needs no SECRET_KEY: the development key stands in."""
        result = run(["manage.py", "check"], DEBUG="1")
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
