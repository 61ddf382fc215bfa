"""Tests of personal data: encryption, key store, crypto-shredding, unique index, stream deletion.

The helpers below search raw files for bytes, the way someone recovering erased data would.
"""
from __future__ import annotations

import base64
from pathlib import Path


def encodings(secret: bytes) -> list[bytes]:
    """Forms in which ``secret`` could plausibly sit in a file: raw, UTF-16, hex, and base64
    (standard and URL-safe) at each of the three byte alignments."""
    forms = [secret, secret.hex().encode(), secret.hex().upper().encode()]
    try:
        forms.append(secret.decode("utf-8").encode("utf-16-le"))
    except UnicodeDecodeError:
        pass  # key bytes, not text
    for shift in range(3):
        padded = b"\x00" * shift + secret
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            text = encode(padded).rstrip(b"=")
            # Drop the characters that mix in unknown neighbouring bytes at either end.
            forms.append(text[(shift * 4 + 2) // 3 + 1: -2])
    return [form for form in forms if len(form) >= 8]


def files_containing(directory: Path, needles: list[bytes]) -> list[str]:
    """``file: needle`` for every needle found in any file under ``directory`` (recursively)."""
    hits = []
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            blob = path.read_bytes()
            hits += [f"{path.name}: {needle!r}" for needle in needles if needle in blob]
    return hits
