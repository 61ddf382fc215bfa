"""Secrets by reference: the fleet config names where a secret lives, never the secret itself.

A ``SecretRef`` is either an environment variable (``{ env = "VAR" }``) or a file (``{ file = "path" }``,
relative paths taken from the config file's directory). It holds no value, so printing or logging it is
safe. ``resolve()`` reads the value as late as possible and wraps it in ``Secret``, whose repr/str are
masked too; only ``Secret.reveal()`` hands out the bytes, at the point they go on the wire. A secret
file must be a regular file with permissions no wider than 0600 (checked on the open file descriptor,
so a chmod between check and read cannot slip through). ``looks_like_secret`` spots a secret typed
where the variable name or file path belongs, so that errors name the key instead of echoing it.
"""
from __future__ import annotations

import binascii
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Mapping

from gateway.config.errors import SecretUnavailable

SecretKind = Literal["env", "file"]

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Keys and passwords written as hex, with or without separators: 8 bytes (an LLS password) or more.
_HEX_SECRET = re.compile(r"(?:[0-9A-Fa-f][\s:-]?){16,}\Z")
# What variable names and the paths an operator writes are made of; anything else (=, !, $, #, %, ...)
# is typical of a password or of a base64 key.
_NAME_OR_PATH = re.compile(r"[\w./~@+, -]*\Z")
_MAX_SECRET_FILE_BYTES = 64 * 1024  # keys and passwords are tiny; a big file is the wrong file


@dataclass(frozen=True, slots=True)
class Secret:
    """A resolved secret value; repr and str never show it."""

    _value: bytes = field(repr=False)

    def reveal(self) -> bytes:
        return self._value

    def __repr__(self) -> str:
        return "Secret(<hidden>)"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class SecretRef:
    """Where a secret lives. ``origin`` is the config key it came from, for error messages."""

    kind: SecretKind
    target: str  # environment variable name, or absolute file path
    origin: str = ""

    def describe(self) -> str:
        where = f"environment variable {self.target}" if self.kind == "env" else f"file {self.target}"
        return f"{where} ({self.origin})" if self.origin else where

    def __str__(self) -> str:
        return self.describe()

    def resolve(self, environ: Mapping[str, str] | None = None) -> Secret:
        """Read the secret now; raises ``SecretUnavailable`` naming the reference, never the value."""
        if self.kind == "env":
            env = os.environ if environ is None else environ
            value = env.get(self.target)
            if value is None:
                raise SecretUnavailable(self.describe(), "is not set")
            if value == "":
                raise SecretUnavailable(self.describe(), "is empty")
            return Secret(value.encode())
        raw = read_secret_file(Path(self.target), self.describe())
        # Editors and `echo` add a final newline; it is never part of a password or key.
        raw = raw.removesuffix(b"\n").removesuffix(b"\r")
        if not raw:
            raise SecretUnavailable(self.describe(), "is empty")
        return Secret(raw)

    def resolve_key(self, length: int = 16, environ: Mapping[str, str] | None = None) -> Secret:
        """Resolve a key written as hex (e.g. an AES-128 key: 32 hex digits) into its raw bytes."""
        text = self.resolve(environ).reveal().strip()
        try:
            key = binascii.unhexlify(text)
        except (binascii.Error, ValueError):
            raise SecretUnavailable(self.describe(), "is not a hexadecimal key") from None
        if len(key) != length:
            raise SecretUnavailable(
                self.describe(), f"holds a {len(key)}-byte key; expected {length} bytes ({2 * length} hex digits)"
            )
        return Secret(key)


def looks_like_secret(value: str) -> bool:
    """Whether a string given as an environment variable name or a file path looks like a key or a
    password instead (hex of 8 bytes or more, or characters names and paths do not have)."""
    return bool(_HEX_SECRET.match(value.strip())) or not _NAME_OR_PATH.match(value)


def secret_file_problem(path: Path) -> str | None:
    """Why this file cannot hold a secret (missing, not a file, too open), or None if it can."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return "does not exist"
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    return _mode_problem(st, path)


def _mode_problem(st: os.stat_result, path: Path) -> str | None:
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o177:
        return f"has permissions {mode:04o}, wider than 0600; run: chmod 600 {path}"
    return None


def read_secret_file(path: Path, description: str) -> bytes:
    # O_NONBLOCK: a FIFO planted at the path must not hang the poll; it is refused as not a file.
    flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise SecretUnavailable(description, "does not exist") from None
    except OSError as exc:
        raise SecretUnavailable(description, f"cannot be read ({exc.strerror})") from None
    try:
        problem = _mode_problem(os.fstat(fd), path)
        if problem:
            raise SecretUnavailable(description, problem)
        data = os.read(fd, _MAX_SECRET_FILE_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > _MAX_SECRET_FILE_BYTES:
        raise SecretUnavailable(description, f"is larger than {_MAX_SECRET_FILE_BYTES} bytes")
    return data


def read_env_file(path: Path) -> dict[str, str]:
    """Parse a systemd ``EnvironmentFile=``-style file (``NAME=value`` lines, ``#`` comments).

    Used by the demo to supply its test-only secrets as environment variables, exactly as systemd
    would for the real service. Single or double quotes around a value are removed.
    """
    values: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        name, sep, value = line.removeprefix("export ").partition("=")
        name = name.strip()
        if not sep or not ENV_NAME.match(name):
            raise ValueError(f"{path}:{number}: expected NAME=value")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name] = value
    return values
