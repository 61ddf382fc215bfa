"""Typed reading of TOML tables that records problems instead of stopping at the first one.

``Table`` wraps one parsed table with its key path; each getter checks type and range, records a
``ConfigIssue`` in the shared ``Context`` when something is wrong and returns None, so the caller can go
on reading and report everything at once. Unknown keys are reported on construction with a "did you
mean" suggestion. ``Table.secret`` reads a secret reference and refuses a secret written inline without
ever quoting it; nor does it quote a variable name or file path that looks like a secret (typed in the
wrong place) or a file name that does not exist (a password cannot be told from a mistyped name).
"""
from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection, Iterable, Mapping, Sequence, TypeVar

from gateway.config.errors import ConfigIssue
from gateway.config.secrets import ENV_NAME, SecretRef, looks_like_secret, secret_file_problem

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")  # ids end up in stream names and file names

S = TypeVar("S", bound=str)

REQUIRED: Any = object()
"""Default meaning "this key must be present"."""


@dataclass
class Context:
    file: str
    base_dir: Path
    check_secret_files: bool
    issues: list[ConfigIssue] = field(default_factory=list)
    item_ids: dict[str, str] = field(default_factory=dict)  # "meters[3]" -> "lg-e450-0004"

    def add(self, key_path: str, message: str) -> None:
        item = key_path.split(".", 1)[0]
        label = f"id {self.item_ids[item]!r}" if item in self.item_ids else ""
        self.issues.append(ConfigIssue(self.file, key_path, message, label))


def type_name(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return "a date/time"


def suggest(word: str, candidates: Iterable[str]) -> str:
    match = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {match[0]!r}?" if match else ""


def one_of(choices: Iterable[str]) -> str:
    return ", ".join(repr(c) for c in sorted(choices))


class Table:
    """One TOML table being read; getters record issues instead of raising and return None."""

    def __init__(self, ctx: Context, data: Mapping[str, Any], path: str, known: Collection[str]) -> None:
        self.ctx = ctx
        self.data = data
        self.path = path
        for key in data:
            if key not in known:
                hint = suggest(key, known) or f" (this table accepts: {', '.join(known)})"
                # Only the key is named: a mistyped key may well hold a secret.
                ctx.add(self.key(key), f"unknown key{hint}")

    def key(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        return key in self.data

    def _get(self, key: str, default: Any, check: Callable[[Any], bool], expected: str) -> Any:
        if key not in self.data:
            if default is REQUIRED:
                self.ctx.add(self.key(key), "missing required key")
                return None
            return default
        value = self.data[key]
        if not check(value):
            self.ctx.add(self.key(key), f"expected {expected}, got {type_name(value)}")
            return None
        return value

    def string(self, key: str, default: Any = REQUIRED, *, nonempty: bool = True) -> str | None:
        value = self._get(key, default, lambda v: isinstance(v, str), "a string")
        if isinstance(value, str) and nonempty and not value.strip():
            self.ctx.add(self.key(key), "must not be empty")
            return None
        return value

    def ident(self, key: str) -> str | None:
        value = self.string(key)
        if value is not None and not _ID.match(value):
            self.ctx.add(self.key(key), f"{value!r} is not a valid id: use 1-64 letters, digits, '.', '_', '-'")
            return None
        return value

    def boolean(self, key: str, default: Any = REQUIRED) -> bool | None:
        return self._get(key, default, lambda v: isinstance(v, bool), "true or false")

    def integer(self, key: str, default: Any = REQUIRED, *, lo: int | None = None, hi: int | None = None) -> int | None:
        value = self._get(key, default, lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer")
        if value is None:
            return None
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            bounds = f"between {lo} and {hi}" if lo is not None and hi is not None else (
                f"at least {lo}" if lo is not None else f"at most {hi}")
            self.ctx.add(self.key(key), f"must be {bounds}, got {value}")
            return None
        return value

    def number(self, key: str, default: Any = REQUIRED, *, positive: bool = True) -> float | None:
        value = self._get(
            key, default,
            lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
            "a number",
        )
        if value is None:
            return None
        if value < 0 or (positive and value == 0):
            self.ctx.add(self.key(key), f"must be {'greater than 0' if positive else 'at least 0'}, got {value}")
            return None
        return float(value)

    def choice(self, key: str, choices: Sequence[S], default: Any = REQUIRED) -> S | None:
        value = self.string(key, default)
        if value is None:
            return None
        for known in choices:
            if known == value:
                return known
        hint = suggest(value, choices) or f"; expected one of {one_of(choices)}"
        self.ctx.add(self.key(key), f"unknown value {value!r}{hint}")
        return None

    def table(self, key: str, known: Collection[str], *, required: bool = False, example: str = "") -> Table | None:
        if key not in self.data:
            if required:
                self.ctx.add(self.key(key), "missing required table")
            return Table(self.ctx, {}, self.key(key), known) if not required else None
        value = self.data[key]
        if not isinstance(value, dict):
            self.ctx.add(self.key(key), f"expected a table{example}, got {type_name(value)}")
            return None
        return Table(self.ctx, value, self.key(key), known)

    def array_of_tables(self, key: str) -> list[tuple[str, dict[str, Any]]]:
        value = self.data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            self.ctx.add(self.key(key), f"expected an array of tables ([[{key}]] sections), got {type_name(value)}")
            return []
        items = [(f"{self.key(key)}[{index}]", item) for index, item in enumerate(value)]
        for path, item in items:
            if isinstance(item.get("id"), str):
                self.ctx.item_ids[path] = item["id"]
        return items

    def path_value(self, key: str, default: Any = REQUIRED) -> Path | None:
        value = self.string(key, default)
        return None if value is None else self.ctx.base_dir / Path(value)

    def secret(self, key: str, *, required: bool = True, env_only: bool = False) -> SecretRef | None:
        key_path = self.key(key)
        syntax = f'{key} = {{ env = "VARIABLE_NAME" }}'
        if not env_only:
            syntax += f' or {key} = {{ file = "path/to/file" }} (a file with mode 0600)'
        if key not in self.data:
            if required:
                self.ctx.add(key_path, f"missing required secret reference: {syntax}")
            return None
        value = self.data[key]
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            # Never quote the value: it is, by all likelihood, the secret itself.
            self.ctx.add(key_path, f"a secret must not be written in the config file; reference it: {syntax}")
            return None
        if not isinstance(value, dict):
            self.ctx.add(key_path, f"expected a secret reference ({syntax}), got {type_name(value)}")
            return None
        ref = Table(self.ctx, value, key_path, ("env", "file"))
        if env_only and "file" in value:
            self.ctx.add(key_path, f"this secret is taken only from an environment variable: {syntax}")
            return None
        kinds = [k for k in ("env", "file") if k in value]
        if len(kinds) != 1:
            self.ctx.add(key_path, f"a secret reference names exactly one source: {syntax}")
            return None
        target = ref.string(kinds[0])
        if target is None:
            return None
        # None of the messages below quotes the value: it may be the secret, typed in the wrong place.
        if kinds[0] == "env":
            if not ENV_NAME.match(target):
                self.ctx.add(f"{key_path}.env", "is not a valid environment variable name")
                return None
            if looks_like_secret(target):
                self.ctx.add(f"{key_path}.env", "looks like a key or password, not an environment variable name "
                                                "(not shown here): put the secret in a variable and name the "
                                                'variable here, e.g. env = "METER_PASSWORD"')
                return None
            return SecretRef("env", target, key_path)
        if looks_like_secret(target):
            self.ctx.add(f"{key_path}.file", "looks like a key or password, not a file path (not shown here): put "
                                             "the secret in a file with mode 0600 and give its path here")
            return None
        file_path = self.ctx.base_dir / target
        if self.ctx.check_secret_files:
            problem = secret_file_problem(file_path)
            if problem == "does not exist" and "/" not in target:
                # A bare name that is no file may as well be the password itself: name the directory only.
                self.ctx.add(f"{key_path}.file", f"secret file does not exist in {self.ctx.base_dir} (its name is "
                                                 "not shown here, in case a secret was typed instead of a path)")
            elif problem:
                self.ctx.add(f"{key_path}.file", f"secret file {file_path} {problem}")
        return SecretRef("file", str(file_path), key_path)
