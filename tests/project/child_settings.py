"""smtest.settings evaluated in a child process from the environment alone, for the tests of what
an operator's environment variables configure (nothing of this shell's configuration leaks in)."""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def setting_in_child(name: str, **environment: str) -> Any:
    """`settings.<name>`, through JSON, in a child running smtest.settings with `environment` and
    only PATH, HOME and LANG of this process's; AssertionError with its stderr if it fails."""
    keep = {key: os.environ[key] for key in ("PATH", "HOME", "LANG") if key in os.environ}
    code = (
        "import json, django; django.setup(); from django.conf import settings; "
        f"print(json.dumps(settings.{name}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**keep, "DJANGO_SETTINGS_MODULE": "smtest.settings", **environment},
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode:
        raise AssertionError(result.stderr)
    return json.loads(result.stdout.strip().splitlines()[-1])
