"""Client invocation counters of ciphered associations, kept so they never go back.

HLS-GMAC meters refuse a request whose invocation counter is not above the last one they saw, and a
reused counter with the same key breaks GCM. The session reserves counters ahead in a store before
using them; this file-backed store survives restarts and crashes (atomic replace + fsync).
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Protocol

import anyio
import anyio.to_thread

from drivers.errors import ConfigError


class InvocationCounterStore(Protocol):
    """Where the next unused client invocation counter of each meter survives restarts."""

    async def load(self, meter_id: str) -> int:
        """The next counter value that has never been used (0 for an unknown meter)."""

    async def save(self, meter_id: str, next_unused: int) -> None:
        """Record that every value below ``next_unused`` may have been used. Never goes back."""


class FileInvocationCounterStore:
    """One small JSON file per meter in ``directory``, replaced atomically on every save."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)

    def _path(self, meter_id: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", meter_id)
        return self.directory / f"{safe}.invocation-counter.json"

    def _load_sync(self, meter_id: str) -> int:
        path = self._path(meter_id)
        try:
            document = json.loads(path.read_text("utf-8"))
        except FileNotFoundError:
            return 0
        except (OSError, ValueError) as exc:
            raise ConfigError(meter_id, f"invocation counter file {path} is unreadable: {exc}") from exc
        value = document.get("next_unused") if isinstance(document, dict) else None
        if not isinstance(value, int) or value < 0 or document.get("meter_id") != meter_id:
            raise ConfigError(meter_id, f"invocation counter file {path} is not valid")
        return value

    def _save_sync(self, meter_id: str, next_unused: int) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        current = self._load_sync(meter_id)
        if next_unused <= current:
            return
        path = self._path(meter_id)
        body = json.dumps({"meter_id": meter_id, "next_unused": next_unused}).encode("utf-8")
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(body)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    async def load(self, meter_id: str) -> int:
        return await anyio.to_thread.run_sync(self._load_sync, meter_id)

    async def save(self, meter_id: str, next_unused: int) -> None:
        await anyio.to_thread.run_sync(self._save_sync, meter_id, next_unused)
