"""`failover` is a reusable app: it ships alone and depends on nothing else in the project."""

import ast
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from django.test import SimpleTestCase

ROOT = Path(__file__).resolve().parents[2]
PROJECT_PACKAGES = {"smtest", "mailservice", "sandbox", "tests", "bench"}


class PackagingTests(SimpleTestCase):
    def test_failover_imports_nothing_from_the_project(self):
        """No module of failover imports smtest, mailservice, sandbox or tests."""
        offenders = []
        for path in (ROOT / "failover").rglob("*.py"):
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module]
                offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in PROJECT_PACKAGES]
        self.assertEqual(offenders, [])

    def test_wheel_builds_with_the_failover_app_only(self):
        """`pip wheel .` builds a wheel holding failover (with its command) and nothing else."""
        with tempfile.TemporaryDirectory() as tmp:
            # Build from a copy: setuptools writes build/ and *.egg-info next to the sources.
            source, out = Path(tmp) / "src", Path(tmp) / "dist"
            source.mkdir()
            for name in ("pyproject.toml", "setup.cfg", "README.md"):
                shutil.copy(ROOT / name, source / name)
            shutil.copytree(ROOT / "docs", source / "docs")
            shutil.copytree(
                ROOT / "failover", source / "failover", ignore=shutil.ignore_patterns("__pycache__")
            )
            result = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "wheel",
                    "--no-deps",
                    "--no-build-isolation",
                    "-w",
                    str(out),
                    str(source),
                ],
                capture_output=True,
                text=True,
                timeout=300,
            )
            self.assertEqual(result.returncode, 0, result.stderr[-2000:])
            (wheel,) = Path(out).glob("*.whl")
            names = zipfile.ZipFile(wheel).namelist()
        packages = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
        self.assertEqual(packages, {"failover"})
        self.assertIn("failover/management/commands/failover_status.py", names)
        self.assertIn("failover/backends.py", names)
