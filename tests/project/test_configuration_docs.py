"""Every environment variable the project reads is documented, and every one documented is read;
the defaults .env.example shows are the ones the code uses."""

import re
from pathlib import Path

from django.test import SimpleTestCase

from failover import conf as failover_conf
from mailservice import conf as mailservice_conf
from sandbox.conf import environment_variables as sandbox_variables
from smtest.environment import settings_from_environment

ROOT = Path(__file__).resolve().parents[2]
# Variables with a family prefix: a mention of one in the docs is a claim that it is read.
FAMILIES = ("FIRST_WORKING_EMAIL_", "MAILSERVICE_", "SANDBOX_")
ENV_CALL = re.compile(r'env\.\w+\(\s*"([A-Z][A-Z0-9_]+)"')
EXAMPLE_LINE = re.compile(r"^#?\s*([A-Z][A-Z0-9_]+)=(.*)$", re.MULTILINE)
NAME = re.compile(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b")


def settings_variables() -> set[str]:
    """What smtest/settings.py reads itself, plus the apps' settings it takes from the environment."""
    read = set(ENV_CALL.findall((ROOT / "smtest" / "settings.py").read_text()))
    return read | set(failover_conf.DEFAULTS) | set(mailservice_conf.DEFAULTS)


def read_variables() -> set[str]:
    return settings_variables() | set(sandbox_variables())


def example_values() -> dict[str, str]:
    """`NAME=value` lines of .env.example (commented or not), the value without its comment."""
    return {
        name: value.split("#")[0].strip()
        for name, value in EXAMPLE_LINE.findall((ROOT / ".env.example").read_text())
    }


def docs_text() -> str:
    return "\n".join(path.read_text() for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])


class EnvironmentDocumentationTests(SimpleTestCase):
    def test_every_variable_read_is_in_env_example(self):
        """.env.example lists every variable the project reads."""
        missing = read_variables() - set(example_values())
        self.assertEqual(sorted(missing), [], "read but missing from .env.example")

    def test_every_variable_read_is_in_the_docs(self):
        """README.md or docs/ describes every variable the project reads."""
        text = docs_text()
        missing = {name for name in read_variables() if not re.search(rf"\b{name}\b", text)}
        self.assertEqual(sorted(missing), [], "read but not in README.md or docs/")

    def test_env_example_names_only_variables_that_are_read(self):
        """.env.example names no variable that nothing reads (ANYMAIL_* all become ANYMAIL settings)."""
        unread = {
            name
            for name in example_values()
            if name not in read_variables() and not name.startswith("ANYMAIL_")
        }
        self.assertEqual(sorted(unread), [], "in .env.example but read by nothing")

    def test_docs_name_only_variables_that_are_read(self):
        """The docs mention no FIRST_WORKING_EMAIL_*, MAILSERVICE_* or SANDBOX_* name that nothing reads."""
        mentioned = {name for name in NAME.findall(docs_text()) if name.startswith(FAMILIES)}
        self.assertEqual(sorted(mentioned - read_variables()), [], "in the docs but read by nothing")

    def test_env_example_shows_the_defaults_the_code_uses(self):
        """Each app setting .env.example shows with a value has that value as its default."""
        defaults = {**failover_conf.DEFAULTS, **mailservice_conf.DEFAULTS}
        # FIRST_WORKING_EMAIL_BACKENDS: the project sets its own chain (smtest/settings.py).
        shown = {
            name: value
            for name, value in example_values().items()
            if name in defaults and value and name != "FIRST_WORKING_EMAIL_BACKENDS"
        }
        self.assertTrue(shown)
        for name, value in shown.items():
            with self.subTest(name):
                self.assertEqual(settings_from_environment({name: value}, defaults)[name], defaults[name])
