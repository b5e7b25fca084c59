"""The Docker image holds every static file the running configuration links (docs/deployment.md,
"Docker Compose").

There is no Docker engine where the suite runs, so the image's build step is run as it is
written: `collectstatic` with the environment of the Dockerfile's RUN line, and again with the
environment docker-compose.yml gives the web container (plus what its `.env` must set). Both must
collect the same files. Then the admin pages that configuration serves, django-rq's queue pages
included, are rendered under it, and every static file they link, every one the installed apps'
templates name, and every file their stylesheets load must be among the image's files.

The settings are evaluated in subprocesses with a clean environment (as in
test_production_settings.py). Only the database differs from Compose's (SQLite instead of
PostgreSQL, which no static file depends on); Redis is a throwaway redis-server on loopback when
one is installed, for django-rq's pages (written against django-rq 4.2)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from django.test import SimpleTestCase

from tests.servers import real

ROOT = Path(__file__).resolve().parents[2]
# What docs/deployment.md ("Docker Compose") tells the operator to set in `.env`, which Compose
# passes to every container.
DOT_ENV = {
    "SECRET_KEY": "compose-test-" + "k" * 50,
    "ALLOWED_HOSTS": "testserver",
    "ANYMAIL_WEBHOOK_SECRET": "compose:test-secret",
}
STATIC_REFERENCE = re.compile(r"""\{%\s*static\s+(['"])([^'"]+)\1""")
CSS_URL = re.compile(r"""url\(\s*['"]?([^'")]+)['"]?\s*\)|@import\s+['"]([^'"]+)['"]""")
COMPOSE_VARIABLE = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")

# In the child, under the configuration's settings: the admin pages it serves and the static
# files each links, and the static files the installed apps' templates name.
PROBE = r"""
import json, os, re
from pathlib import Path
import django
django.setup()
from django.apps import apps
from django.conf import settings
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

STATIC = settings.STATIC_URL if settings.STATIC_URL.startswith("/") else "/" + settings.STATIC_URL
LINK = re.compile(r'(?:href|src)="' + re.escape(STATIC) + r'([^"?#]+)')
REFERENCE = re.compile(r'''\{%\s*static\s+(['"])([^'"]+)\1''')

call_command("migrate", verbosity=0, skip_checks=True)
user = get_user_model().objects.create_superuser("probe", "probe@example.com", "probe-password")
client = Client()
pages = {}

def fetch(path):
    response = client.get(path, secure=True)
    pages[path] = [response.status_code, sorted(set(LINK.findall(response.content.decode(errors="replace"))))]

fetch(reverse("admin:login"))
client.force_login(user)
fetch(reverse("admin:index"))
for model, model_admin in admin.site._registry.items():
    info = (model._meta.app_label, model._meta.model_name)
    fetch(reverse("admin:%s_%s_changelist" % info))
    if model_admin.has_add_permission(type("Request", (), {"user": user})()):
        fetch(reverse("admin:%s_%s_add" % info))
if os.environ.get("PROBE_DJANGO_RQ") == "1":
    import django_rq
    job = django_rq.get_queue("default").enqueue("os.getpid")
    fetch(reverse("admin:django_rq_home"))
    for name in ("jobs", "queue_details", "finished_jobs", "failed_jobs", "scheduled_jobs", "started_jobs",
                 "deferred_jobs", "clear", "requeue_all", "workers"):
        fetch(reverse("admin:django_rq_" + name, args=[0]))
    fetch(reverse("admin:django_rq_job_detail", args=[0, job.id]))

templates = {}
for app in apps.get_app_configs():
    for path in sorted((Path(app.path) / "templates").rglob("*.html")):
        names = sorted({match.group(2) for match in REFERENCE.finditer(path.read_text(errors="replace"))})
        if names:
            templates[app.label + ":" + path.name] = names
print(json.dumps({"pages": pages, "templates": templates}))
"""


def logical_lines(text: str) -> list[str]:
    """A Dockerfile's instructions, continuation lines joined and comments dropped."""
    lines, current = [], ""
    for line in text.splitlines():
        if not current and line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        current += line
        if current.strip():
            lines.append(current.strip())
        current = ""
    return lines


def assignments(words: list[str]) -> dict[str, str]:
    """The leading NAME=value words of a shell command or an ENV instruction."""
    found = {}
    for word in words:
        name, equals, value = word.partition("=")
        if not equals or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            break
        found[name] = value
    return found


def image_build_environment() -> dict[str, str]:
    """The environment of the Dockerfile's collectstatic: its ENV values, then the RUN line's own."""
    environment: dict[str, str] = {}
    for line in logical_lines((ROOT / "Dockerfile").read_text()):
        instruction, _, rest = line.partition(" ")
        if instruction.upper() == "ENV":
            environment.update(assignments(shlex.split(rest)))
        elif instruction.upper() == "RUN" and "collectstatic" in rest:
            command = rest.split("&&")[0]
            words = shlex.split(command)
            run_env = assignments(words)
            assert words[len(run_env) :][:3] == ["python", "manage.py", "collectstatic"], command
            return {**environment, **run_env}
    raise AssertionError("The Dockerfile has no RUN line with collectstatic")


def compose_environment(service: str) -> dict[str, str]:
    """What docker-compose.yml sets for `service` (its `${VAR:-default}` at their defaults), and `.env`'s."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    values = compose["services"][service].get("environment") or {}
    resolved = {
        name: COMPOSE_VARIABLE.sub(lambda m: m.group(2) or "", str(value)) for name, value in values.items()
    }
    return {**DOT_ENV, **resolved}  # Compose's `environment` wins over `env_file`


def clean_environment(values: dict[str, str]) -> dict[str, str]:
    keep = {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}
    return {**keep, "DJANGO_SETTINGS_MODULE": "smtest.settings", "PYTHONDONTWRITEBYTECODE": "1", **values}


def run(args: list[str], values: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run(
        args, cwd=ROOT, env=clean_environment(values), capture_output=True, text=True, timeout=300
    )
    if result.returncode:
        raise AssertionError(f"{' '.join(args[:3])} failed:\n{result.stdout}\n{result.stderr}")
    return result


def collected(values: dict[str, str], static_root: Path) -> set[str]:
    run(
        [sys.executable, "manage.py", "collectstatic", "--no-input"],
        {**values, "STATIC_ROOT": str(static_root)},
    )
    return {path.relative_to(static_root).as_posix() for path in static_root.rglob("*") if path.is_file()}


class DockerImageStaticFilesTests(SimpleTestCase):
    """The image's collectstatic against the configuration Compose runs."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.folder = Path(tempfile.mkdtemp(prefix="smtest-image-"))
        cls.addClassCleanup(shutil.rmtree, cls.folder, ignore_errors=True)
        cls.image_environment = image_build_environment()
        cls.compose_environment = compose_environment("web")
        cls.image_files = collected(cls.image_environment, cls.folder / "image")
        cls.compose_files = collected(cls.compose_environment, cls.folder / "compose")
        cls.redis = cls.start_redis()
        probe_environment = {
            **cls.compose_environment,
            "DATABASE_URL": f"sqlite:///{cls.folder / 'probe.sqlite3'}",
        }
        if cls.redis:
            probe_environment.update(
                CACHE_URL=cls.redis.url_for(0), REDIS_URL=cls.redis.url_for(1), PROBE_DJANGO_RQ="1"
            )
        else:  # Compose's Redis host does not exist here: a cache every page can reach instead
            probe_environment["CACHE_URL"] = "locmemcache://"
        output = run([sys.executable, "-c", PROBE], probe_environment).stdout
        cls.probe = json.loads(output.strip().splitlines()[-1])

    @classmethod
    def start_redis(cls) -> real.RedisServer | None:
        """A throwaway redis-server, stopped in a class cleanup; None when none is installed."""
        if real.missing("redis"):
            return None
        server = real.RedisServer.start()
        cls.addClassCleanup(server.stop)
        return server

    def assert_in_image(self, names, where: str) -> None:
        missing = sorted(set(names) - self.image_files)
        self.assertEqual(missing, [], f"linked by {where} but not in the image")

    def test_the_compose_services_run_the_queue_the_image_collected_for(self):
        """Every service of docker-compose.yml runs from the image with TASKS_BACKEND=rq and a REDIS_URL."""
        for service in ("web", "worker", "recovery", "migrate"):
            with self.subTest(service=service):
                environment = compose_environment(service)
                self.assertEqual(environment["TASKS_BACKEND"], self.image_environment["TASKS_BACKEND"])
                self.assertTrue(environment["REDIS_URL"].startswith("redis://"))

    def test_the_image_collects_the_same_files_as_the_compose_settings(self):
        """collectstatic under the Dockerfile's environment and under Compose's gives one set of files."""
        self.assertEqual(sorted(self.compose_files - self.image_files), [], "collected under Compose only")
        self.assertEqual(sorted(self.image_files - self.compose_files), [], "collected in the image only")

    def test_the_image_holds_django_rqs_admin_css(self):
        """django-rq's queue pages' stylesheet, and its gzip copy, are in the image."""
        self.assertLessEqual({"django_rq/css/admin.css", "django_rq/css/admin.css.gz"}, self.image_files)

    def test_every_admin_page_answers_and_its_static_files_are_in_the_image(self):
        """The login, the index, each model's list and add pages: 200, and every file they link collected."""
        pages = {path: page for path, page in self.probe["pages"].items() if "/django_rq/" not in path}
        self.assertIn("/admin/mailservice/message/", pages)
        for path, (status, links) in pages.items():
            with self.subTest(page=path):
                self.assertEqual(status, 200)
                self.assertTrue(links)
                self.assert_in_image(links, path)

    def test_every_django_rq_page_answers_and_its_static_files_are_in_the_image(self):
        """django-rq's dashboard, queue, registry, worker and job pages link only collected files."""
        if not self.redis:
            self.skipTest("redis-server is not installed: django-rq's pages need a Redis to render")
        pages = {path: page for path, page in self.probe["pages"].items() if "/django_rq/" in path}
        self.assertGreaterEqual(len(pages), 12)
        linked = set()
        for path, (status, links) in pages.items():
            with self.subTest(page=path):
                self.assertEqual(status, 200)
                self.assert_in_image(links, path)
                linked.update(links)
        self.assertIn("django_rq/css/admin.css", linked)

    def test_every_static_file_the_installed_templates_name_is_in_the_image(self):
        """Each `{% static "…" %}` in the templates of the apps Compose's configuration installs is
        collected."""
        templates = self.probe["templates"]
        self.assertTrue(
            any(name.startswith("django_rq:") for name in templates), "django_rq is not installed"
        )
        for template, names in templates.items():
            with self.subTest(template=template):
                self.assert_in_image(names, template)

    def test_the_linked_stylesheets_load_only_collected_files(self):
        """Every url() and @import in the stylesheets the pages link points at a collected file."""
        stylesheets = {
            link for _, links in self.probe["pages"].values() for link in links if link.endswith(".css")
        }
        self.assertIn("admin/css/base.css", stylesheets)
        for stylesheet in sorted(stylesheets):
            text = (self.folder / "image" / stylesheet).read_text()
            targets = set()
            for match in CSS_URL.finditer(text):
                target = match.group(1) or match.group(2)
                if target.startswith(("data:", "http:", "https:", "#", "/")):
                    continue
                targets.add(os.path.normpath(os.path.join(os.path.dirname(stylesheet), target)))
            with self.subTest(stylesheet=stylesheet):
                self.assert_in_image(targets, stylesheet)
