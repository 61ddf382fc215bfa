"""Reader for the real-meter trace file format (``fixtures/traces/*.txt``).

A file is ``#`` header lines (``key: value``, continuation lines indented) followed by ``[frame N]``
blocks with ``key = value`` fields; ``expected`` holds indented lines, ``hex`` the exact bytes
(whitespace insignificant). Lines of ``expected`` prefixed ``(transcriber)`` were derived by whoever
transcribed the trace; the others are stated by the source.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from drivers.decode.errors import DecodeError

_FRAME = re.compile(r"^\[frame (\d+)\]\s*$")
_FIELD = re.compile(r"^([a-z_]+) =\s?(.*)$")
_HEADER = re.compile(r"^#\s?([a-z_]+):\s*(.*)$")


@dataclass(frozen=True)
class TraceFrame:
    number: int
    fields: dict[str, str]
    expected: tuple[str, ...]
    data: bytes

    @property
    def source_expected(self) -> tuple[str, ...]:
        return tuple(line for line in self.expected if not line.startswith("(transcriber)"))

    @property
    def transcriber_expected(self) -> tuple[str, ...]:
        """Transcriber lines with the ``(transcriber)`` prefix removed and indentation kept."""
        return tuple(line[len("(transcriber) "):] for line in self.expected if line.startswith("(transcriber)"))

    @property
    def check(self) -> str:
        return self.fields.get("check", "")

    @property
    def check_bad(self) -> bool:
        return "BAD" in self.check or "MISMATCH" in self.check


@dataclass(frozen=True)
class TraceFile:
    header: dict[str, str]
    frames: tuple[TraceFrame, ...] = field(default=())

    def frame(self, number: int) -> TraceFrame:
        for frame in self.frames:
            if frame.number == number:
                return frame
        raise KeyError(number)


def parse_trace(text: str) -> TraceFile:
    header: dict[str, str] = {}
    frames: list[TraceFrame] = []
    last_header: str | None = None
    current: dict[str, str] | None = None
    number = 0
    expected: list[str] = []
    hex_lines: list[str] = []
    block: str | None = None  # which multi-line field the indented lines belong to

    def finish() -> None:
        if current is None:
            return
        try:
            data = bytes.fromhex("".join(hex_lines))
        except ValueError:
            raise DecodeError(f"frame {number}: hex field is not hexadecimal") from None
        if "len" in current and int(current["len"]) != len(data):
            raise DecodeError(f"frame {number}: len = {current['len']} but {len(data)} bytes of hex")
        frames.append(TraceFrame(number, dict(current), tuple(expected), data))

    for line in text.splitlines():
        if line.startswith("#"):
            match = _HEADER.match(line)
            if match and current is None:
                last_header = match.group(1)
                header[last_header] = match.group(2).strip()
            elif last_header and current is None:
                header[last_header] += " " + line.lstrip("#").strip()
            continue
        if (match := _FRAME.match(line)):
            finish()
            current, number, expected, hex_lines, block = {}, int(match.group(1)), [], [], None
            continue
        if current is None or not line.strip():
            continue
        if line.startswith((" ", "\t")):
            if block == "expected":
                expected.append(line[2:] if line.startswith("  ") else line.strip())
            elif block == "hex":
                hex_lines.append(line.strip().replace(" ", ""))
            elif block is not None:
                current[block] += " " + line.strip()
            continue
        if (match := _FIELD.match(line)):
            block = match.group(1)
            current[block] = match.group(2).strip()
            continue
        raise DecodeError(f"unexpected line in trace file: {line[:40]!r}")
    finish()
    return TraceFile(header, tuple(frames))


def load_trace(path: str | Path) -> TraceFile:
    return parse_trace(Path(path).read_text(encoding="utf-8"))
