"""Keep dlms-cosem's logging and prints from ever writing frames or secrets.

dlms-cosem logs through structlog; at structlog's defaults every frame and the LLS password go to
stdout, and formatting them costs about 3x the CPU of the exchange. Our own code logs through stdlib
``logging`` and never formats frames, so in our process structlog is configured to drop every event
before it is rendered. A few dlms-cosem modules also call ``print()`` on meter bytes (25.1.0: a
malformed InitiateResponse prints its conformance bytes), which would corrupt ``gateway decode
--json`` and bypass the log format; ``print`` is shadowed in those modules by a function that logs
the fact at DEBUG, without the bytes. ``redact`` is the second line of defence for any text (error
messages built from library exceptions) that might echo secret bytes back.
"""
from __future__ import annotations

import importlib
import logging as _stdlib_logging
from collections.abc import Iterable
from typing import Any

import structlog

# structlog's filtering bound logger turns every method below this level into a no-op return;
# the few critical() calls that pass the filter are dropped by the processor chain.
_SILENT_LEVEL = _stdlib_logging.CRITICAL


def _drop_event(_logger: Any, _method: str, _event: Any) -> Any:
    raise structlog.DropEvent


# dlms-cosem modules that call print() on bytes from the meter (grep "print(" in the installed package;
# tests/drivers/test_dlms_cosem_output.py fails when a new version adds one elsewhere).
DLMS_COSEM_PRINTING_MODULES = ("dlms_cosem.protocol.xdlms.initiate_response",)

_LOG = _stdlib_logging.getLogger("drivers.dlms_cosem")


def _print_to_debug_log(*args: Any, **_kwargs: Any) -> None:
    """Stands in for ``print`` inside dlms-cosem: notes that it printed, never what (meter bytes may
    carry a password, and our logs never hold frames)."""
    _LOG.debug("dlms-cosem printed %d value(s) (%s); output suppressed",
               len(args), ", ".join(type(arg).__name__ for arg in args))


def silence_dlms_cosem_prints() -> None:
    """Shadow the builtin ``print`` in the dlms-cosem modules that call it (idempotent, process-wide).

    A module-global ``print`` is found before the builtin by that module's code only, so nothing
    else in the process is affected, and unlike redirecting ``sys.stdout`` it is safe with other
    threads writing to stdout at the same moment.
    """
    for name in DLMS_COSEM_PRINTING_MODULES:
        module = importlib.import_module(name)
        if getattr(module, "print", None) is not _print_to_debug_log:
            module.print = _print_to_debug_log  # type: ignore[attr-defined]


def silence_dlms_cosem_logging() -> None:
    """Configure structlog (used in our process only by dlms-cosem) to drop every event, and silence
    dlms-cosem's ``print`` calls (``silence_dlms_cosem_prints``).

    Idempotent; called by every session before it touches dlms-cosem, so that another component
    reconfiguring structlog cannot re-open the leak for long.
    """
    silence_dlms_cosem_prints()
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
