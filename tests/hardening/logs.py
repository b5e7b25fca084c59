"""What the project's log handlers write, for tests of what reaches a log line."""

from __future__ import annotations

import io
import logging

from django.conf import settings
from django.utils.module_loading import import_string

from smtest.logformat import JsonFormatter


class ProjectLogOutput:
    """Every logger at DEBUG, every record written by two handlers built as settings.LOGGING
    builds them (its masking filter; the `plain` and the `json` formatter): `text` and `json`
    are what a text and a JSON log would hold."""

    def __enter__(self) -> ProjectLogOutput:
        self._text, self._json = io.StringIO(), io.StringIO()
        masking = settings.LOGGING["filters"]["mask_secrets"]["()"]
        plain = logging.Formatter(settings.LOGGING["formatters"]["plain"]["format"])
        self.handlers = []
        for stream, formatter in ((self._text, plain), (self._json, JsonFormatter())):
            handler = logging.StreamHandler(stream)
            handler.setFormatter(formatter)
            handler.addFilter(import_string(masking)())
            self.handlers.append(handler)
        loggers = [logging.getLogger()] + [
            logging.getLogger(name) for name in list(logging.root.manager.loggerDict)
        ]
        self.levels = {logger: logger.level for logger in loggers}
        # Loggers that do not propagate are watched directly.
        self.watched = [logging.getLogger()] + [logger for logger in loggers[1:] if not logger.propagate]
        for logger in loggers:
            logger.setLevel(logging.DEBUG)
        for logger in self.watched:
            for handler in self.handlers:
                logger.addHandler(handler)
        return self

    def __exit__(self, *exc) -> None:
        for logger in self.watched:
            for handler in self.handlers:
                logger.removeHandler(handler)
        for logger, level in self.levels.items():
            logger.setLevel(level)

    @property
    def text(self) -> str:
        return self._text.getvalue()

    @property
    def json(self) -> str:
        return self._json.getvalue()

    @property
    def both(self) -> str:
        return self.text + self.json
