"""A logging filter that masks API keys in every record a handler writes (docs/security.md,
"Secrets"). The gateway never logs a key itself; this catches what others log, such as the
development server's request line of a refused `?api_key=smt_…` URL.

Imported by the LOGGING configuration before the app registry is ready, so it imports nothing
of the gateway."""
from __future__ import annotations

import logging
import re

# KEY_PREFIX of services/keys.py, then the random part; the first 8 characters of that part are
# the key's displayed prefix (not secret) and are kept, so a masked key can still be told apart.
API_KEY = re.compile(r"(smt_[A-Za-z0-9_-]{8})[A-Za-z0-9_-]+", re.IGNORECASE)
MASK = r"\1…"
# A query parameter that looks like a credential (the API refuses keys in URLs: api/auth.py):
# its whole value goes, however it is spelt or percent-encoded.
KEY_IN_QUERY = re.compile(r"([?&](?:key|api_key|apikey|token|access_token|auth)=)[^&\s\"']+", re.IGNORECASE)


def mask_api_keys(text: str) -> str:
    return API_KEY.sub(MASK, KEY_IN_QUERY.sub(r"\1***", text))


class MaskApiKeys(logging.Filter):
    """Rewrites the record's message with every API key masked (the record is shared by every
    handler, so it is masked for all of them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to the handler's own error path
            return True
        masked = mask_api_keys(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            # Formatters fill exc_text in only after the filters ran: fill it in here, masked,
            # and they use it as it is.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_api_keys(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_api_keys(record.stack_info)
        return True
