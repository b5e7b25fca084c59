"""How log lines look, whatever writes them (docs/monitoring.md, "Logs"):

- JSON log lines (LOG_FORMAT=json): one object per line with `time`, `level`, `logger`,
  `message`, every field passed with `extra=`, and `exception` / `stack` when there is one;
  a line break of any kind inside a value is escaped, so a record is always one line;
- Python warnings (a library's deprecation or support notice) as log records of `py.warnings`,
  one line each, each distinct warning once per process (`configure_logging`, Django's
  LOGGING_CONFIG);
- `escape_controls`, for lines whose values come from a client (gunicorn's access log).

Logging is configured before the app registry, so this imports only the masking of
mailservice/logfilters.py. Its filter has masked the message, the traceback, the stack and the
`extra=` fields before a record gets here; the JSON formatter masks the fields again, for a
handler configured without the filter (docs/security.md, "Secrets")."""

from __future__ import annotations

import json
import logging
import logging.config
import math
import re
import threading
import warnings
from datetime import UTC, datetime
from typing import Any

from mailservice.logfilters import RESERVED, mask_secrets

# Characters that end a line for some reader (str.splitlines(), editors, terminals) or drive a
# terminal: C0 controls, DEL, C1 controls, and the Unicode line and paragraph separators.
CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# What json.dumps(ensure_ascii=False) leaves as it is among them (it escapes C0 itself).
JSON_UNESCAPED = re.compile("[\x7f-\x9f\u2028\u2029]")
NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
WARNINGS_LOGGER = "py.warnings"
# Distinct warnings remembered per process (their text and category); past this, later ones are
# still logged, each time they are raised, rather than growing the memory.
MAX_REMEMBERED_WARNINGS = 1000


def escape_controls(text: str) -> str:
    r"""`text` with every control character written as an escape (`\r`, `\n`, `\t`, `\x1b`,
    `\u2028`), so a value from a client can neither end a log line nor drive a terminal."""
    return CONTROLS.sub(_escape, text)


def _escape(match: re.Match) -> str:
    char = match.group()
    return NAMED_ESCAPES.get(char) or (f"\\x{ord(char):02x}" if ord(char) <= 0xFF else f"\\u{ord(char):04x}")


def configure_logging(config: dict) -> None:
    """Django's LOGGING_CONFIG: the LOGGING dictionary, then Python warnings through logging."""
    logging.config.dictConfig(config)
    capture_warnings()


def capture_warnings() -> None:
    """Send Python warnings to the `py.warnings` logger, as one line each (logging's own
    captureWarnings writes the warning's source line on a second one); once per process."""
    if warnings.showwarning is not _log_warning:
        warnings.showwarning = _log_warning


class _WarningLog:
    lock = threading.Lock()
    seen: set[tuple[str, str]] = set()


def _log_warning(message, category, filename, lineno, file=None, line=None) -> None:
    if file is not None:  # written to a file on purpose (warnings.showwarning(file=...)): as Python does
        try:
            file.write(warnings.formatwarning(message, category, filename, lineno, line))
        except OSError:  # as Python's own: a closed or broken file loses the warning
            pass
        return
    name = f"{category.__module__}.{category.__qualname__}"
    text = " ".join(str(message).split())
    with _WarningLog.lock:
        if (name, text) in _WarningLog.seen:
            return
        if len(_WarningLog.seen) < MAX_REMEMBERED_WARNINGS:
            _WarningLog.seen.add((name, text))
    logging.getLogger(WARNINGS_LOGGER).warning(
        "%s: %s (%s:%s)",
        category.__name__,
        text,
        filename,
        lineno,
        extra={"category": name, "source": f"{filename}:{lineno}"},
    )


def _masked(value: Any) -> Any:
    """A JSON-ready copy of `value` with every string masked; what JSON cannot hold is its str()."""
    if isinstance(value, str):
        return mask_secrets(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN or Infinity
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, dict):
        return {str(key): _masked(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_masked(item) for item in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return mask_secrets(str(value))


class JsonFormatter(logging.Formatter):
    """One JSON object per line; a field of `extra=` never replaces one of the fixed ones."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": mask_secrets(record.getMessage()),
        }
        for name, value in vars(record).items():
            if name not in RESERVED and not name.startswith("_") and name not in entry:
                entry[name] = _masked(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = mask_secrets(record.exc_text)
        if record.stack_info:
            entry["stack"] = mask_secrets(self.formatStack(record.stack_info))
        # JSON escapes C0 controls itself; NEL and U+2028/U+2029 end a line for some readers too.
        return JSON_UNESCAPED.sub(_json_escape, json.dumps(entry, ensure_ascii=False, default=str))


def _json_escape(match: re.Match) -> str:
    return f"\\u{ord(match.group()):04x}"
