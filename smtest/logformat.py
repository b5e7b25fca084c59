"""JSON log lines (LOG_FORMAT=json): one object per line with `time`, `level`, `logger`,
`message`, every field passed with `extra=`, and `exception` / `stack` when there is one.

Logging is configured before the app registry, so this imports only the key masking of
mailservice/logfilters.py (which imports nothing of the gateway). The MaskApiKeys filter has
masked the message, the traceback and the stack before a record gets here; the `extra=` fields
are masked here, since the filter never sees them (docs/security.md, "Secrets")."""
from __future__ import annotations

import json
import math
import logging
from datetime import datetime, timezone
from typing import Any

from mailservice.logfilters import mask_api_keys

# What every LogRecord carries: anything else on a record came from `extra=`.
RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def _masked(value: Any) -> Any:
    """A JSON-ready copy of `value` with every string masked; what JSON cannot hold is its str()."""
    if isinstance(value, str):
        return mask_api_keys(value)
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
    return mask_api_keys(str(value))


class JsonFormatter(logging.Formatter):
    """One JSON object per line; a field of `extra=` never replaces one of the fixed ones."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": mask_api_keys(record.getMessage()),
        }
        for name, value in vars(record).items():
            if name not in RESERVED and not name.startswith("_") and name not in entry:
                entry[name] = _masked(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = mask_api_keys(record.exc_text)
        if record.stack_info:
            entry["stack"] = mask_api_keys(self.formatStack(record.stack_info))
        return json.dumps(entry, ensure_ascii=False, default=str)
