"""Typed errors of the fleet config: every problem names the file, the key path and what is wrong.

Validation collects every ``ConfigIssue`` it finds and raises them together in one ``ConfigError``, so
an operator fixes a config in one round instead of one error per run. Messages never quote a secret.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in a config file; ``key_path`` looks like ``meters[3].security.password``."""

    file: str
    key_path: str
    message: str
    item: str = ""  # which array entry, by its id ("id 'lg-e450-0004'"): easier than counting to [417]

    def __str__(self) -> str:
        where = f"{self.file}: {self.key_path}" if self.key_path else self.file
        if self.item:
            where += f" ({self.item})"
        return f"{where}: {self.message}"


class ConfigError(Exception):
    """The config cannot be used; ``issues`` lists every problem found, in file order."""

    def __init__(self, issues: Iterable[ConfigIssue]) -> None:
        self.issues: tuple[ConfigIssue, ...] = tuple(issues)
        count = len(self.issues)
        header = f"{count} problem{'s' if count != 1 else ''} in the fleet config:"
        super().__init__("\n".join([header, *(f"  - {issue}" for issue in self.issues)]))


class SecretUnavailable(Exception):
    """A secret reference could not be resolved; the message names the reference, never a value."""

    def __init__(self, reference: str, reason: str) -> None:
        self.reference = reference
        self.reason = reason
        super().__init__(f"secret {reference}: {reason}")
