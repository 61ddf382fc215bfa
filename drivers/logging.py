"""Keep dlms-cosem's logging from ever printing frames or secrets.

dlms-cosem logs through structlog; at structlog's defaults every frame and the LLS password go to
stdout, and formatting them costs about 3x the CPU of the exchange. Our own code logs through stdlib
``logging`` and never formats frames, so in our process structlog is configured to drop every event
before it is rendered. ``redact`` is the second line of defence for any text (error messages built
from library exceptions) that might echo secret bytes back.
"""
from __future__ import annotations

import logging as _stdlib_logging
from collections.abc import Iterable
from typing import Any

import structlog

# structlog's filtering bound logger turns every method below this level into a no-op return;
# the few critical() calls that pass the filter are dropped by the processor chain.
_SILENT_LEVEL = _stdlib_logging.CRITICAL


def _drop_event(_logger: Any, _method: str, _event: Any) -> Any:
    raise structlog.DropEvent


def silence_dlms_cosem_logging() -> None:
    """Configure structlog (used in our process only by dlms-cosem) to drop every event.

    Idempotent; called by every session before it touches dlms-cosem, so that another component
    reconfiguring structlog cannot re-open the leak for long.
    """
    if structlog.get_config().get("processors") == [_drop_event]:
        return
    structlog.configure(
        processors=[_drop_event],
        wrapper_class=structlog.make_filtering_bound_logger(_SILENT_LEVEL),
        logger_factory=structlog.ReturnLoggerFactory(),
        cache_logger_on_first_use=False,
    )


def secret_forms(secret: bytes) -> set[str]:
    """Every textual form in which ``secret`` bytes could leak: hex (both cases, with or without
    separators), bytes repr, and the raw text if it decodes."""
    forms = {secret.hex(), secret.hex().upper(), secret.hex(" "), secret.hex(" ").upper(), repr(secret)}
    forms.add(repr(secret)[2:-1])  # bytes repr without the b'' quotes
    forms.add(repr(bytearray(secret)))
    try:
        forms.add(secret.decode("ascii"))
    except UnicodeDecodeError:
        pass
    # Very short secrets would redact unrelated text; they still get hex/repr forms removed.
    return {form for form in forms if len(form) >= 4}


def redact(text: str, secrets: Iterable[bytes]) -> str:
    """Replace any form of any secret in ``text`` with ``<redacted>``."""
    for secret in secrets:
        for form in sorted(secret_forms(secret), key=len, reverse=True):
            text = text.replace(form, "<redacted>")
    return text
