"""Helpers that turn environment variables into Django settings (kept apart so tests can call them)."""
from collections.abc import Mapping

ANYMAIL_PREFIX = "ANYMAIL_"

SQLITE_OPTIONS = {
    # Web and worker processes write the same file: WAL lets readers go on while one writes,
    # IMMEDIATE takes the write lock at BEGIN (no upgrade deadlock), and the busy timeout
    # makes a waiting writer queue instead of failing with "database is locked".
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    "transaction_mode": "IMMEDIATE",
    "timeout": 20,
}


def anymail_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """Every `ANYMAIL_<SETTING>` variable becomes `ANYMAIL["<SETTING>"]`, so any ESP is configured alike."""
    return {
        name[len(ANYMAIL_PREFIX):]: value
        for name, value in environ.items()
        if name.startswith(ANYMAIL_PREFIX) and len(name) > len(ANYMAIL_PREFIX) and value != ""
    }


def with_sqlite_options(database: dict) -> dict:
    """Add the multi-process SQLite options unless the URL already set them."""
    if database.get("ENGINE", "").endswith("sqlite3"):
        database["OPTIONS"] = {**SQLITE_OPTIONS, **database.get("OPTIONS", {})}
    return database


def split_list(value: str) -> list[str]:
    """Comma-separated list with blanks dropped: `"sendgrid, mailgun,"` → `["sendgrid", "mailgun"]`."""
    return [item.strip() for item in value.split(",") if item.strip()]
