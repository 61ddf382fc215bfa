"""Logging of the long-running gateway: human-readable text or one JSON object per line.

``configure(level, fmt)`` installs one stderr handler on the root logger. Secrets never reach it:
our own code logs no secret values in the first place (config holds references, drivers' errors are
built from non-secret facts), and as a second line of defence every record passes a filter that
replaces any textual form of a secret registered with ``register_secret`` (the poller registers
each key and password when it resolves it) by ``<redacted>``.

Third-party SDKs that log every HTTP request at INFO (the Azure SDK: ``azure.core``'s and
``azure.cosmos``'s HTTP logging policies, one multi-line record per request and per response) are
demoted to DEBUG by ``DemoteSdkRequestLogging``: they show only when the gateway logs at DEBUG, and
then as DEBUG lines. Their warnings and errors pass unchanged.
"""
from __future__ import annotations

import json
import logging
import sys
import threading
import time
from datetime import datetime, timezone
from typing import Any, Final, TextIO

from drivers.logging import redact, silence_dlms_cosem_logging

LOG_FORMATS: Final = ("text", "json")
_TEXT_FORMAT: Final = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
# Attributes every LogRecord has; anything else was passed with ``extra=`` and goes into the JSON.
_STANDARD_ATTRS: Final = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}

_secrets: set[bytes] = set()
_secrets_lock = threading.Lock()


def register_secret(value: bytes) -> None:
    """Remember a secret so that no log line can carry it (idempotent)."""
    if value:
        with _secrets_lock:
            _secrets.add(bytes(value))


class RedactSecrets(logging.Filter):
    """Rewrites a record's message (arguments merged in) with every registered secret redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        with _secrets_lock:
            secrets = tuple(_secrets)
        if not secrets:
            return True
        message = record.getMessage()
        cleaned = redact(message, secrets)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            # Tracebacks are rendered by the formatter from exc_info: render and redact them now.
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = redact(text, secrets)
            record.exc_info = None
        return True


SDK_LOGGERS: Final = ("azure",)
"""Logger hierarchies whose INFO records are demoted to DEBUG (see the module docstring)."""


class DemoteSdkRequestLogging(logging.Filter):
    """INFO records of ``SDK_LOGGERS`` become DEBUG records: dropped unless the root logger's level
    (``[logging] level``, also after a reload) lets DEBUG through."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or not _is_sdk(record.name):
            return True
        if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
            return False
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return True


def _is_sdk(name: str) -> bool:
    return any(name == root or name.startswith(root + ".") for root in SDK_LOGGERS)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO-8601), level, logger, message, extras, exception."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        return json.dumps(out, default=str)


def configure(level: str = "INFO", fmt: str = "text", stream: TextIO | None = None) -> logging.Handler:
    """Install the gateway's log handler on the root logger (replacing handlers set earlier)."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {LOG_FORMATS}, got {fmt!r}")
    silence_dlms_cosem_logging()
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(DemoteSdkRequestLogging())
    handler.addFilter(RedactSecrets())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        formatter = logging.Formatter(_TEXT_FORMAT)
        formatter.converter = time.gmtime  # the box may run in local time; logs say UTC
        handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler

