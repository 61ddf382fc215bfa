"""One-line descriptions of the failures the commands expect, for their error lines."""
from __future__ import annotations


def describe_os_error(exc: OSError) -> str:
    """``FILE: cause`` (both files of a rename), without errno numbers or a traceback."""
    cause = exc.strerror or type(exc).__name__
    if exc.filename is None:
        return cause
    if exc.filename2 is not None:
        return f"{exc.filename} -> {exc.filename2}: {cause}"
    return f"{exc.filename}: {cause}"
