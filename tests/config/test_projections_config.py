"""The `[projections]` table of the fleet config: whether `gateway run` also keeps the views up to date."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from gateway.config import ConfigIssue, load_config
from gateway.config.model import DEFAULT_PROJECTIONS, ProjectionsConfig

from .conftest import BASE, HDLC_METER, REPO, by_key

Issues = Callable[[str], list[ConfigIssue]]


def test_projections_are_off_by_default(write_config: Callable[[str], Path]) -> None:
    config = load_config(write_config(BASE + HDLC_METER))
    assert config.projections == DEFAULT_PROJECTIONS
    assert config.projections.enabled is False


def test_projections_table_is_read(write_config: Callable[[str], Path]) -> None:
    text = BASE + "\n[projections]\nenabled = true\ninterval_s = 0.25\nbatch_size = 50\n" + HDLC_METER
    config = load_config(write_config(text))
    assert config.projections == ProjectionsConfig(enabled=True, interval_s=0.25, batch_size=50)


def test_projections_table_with_only_enabled_takes_the_defaults(write_config: Callable[[str], Path]) -> None:
    config = load_config(write_config(BASE + "\n[projections]\nenabled = true\n" + HDLC_METER))
    assert config.projections == ProjectionsConfig(True, DEFAULT_PROJECTIONS.interval_s, DEFAULT_PROJECTIONS.batch_size)


def test_every_mistake_in_projections_is_named_by_key_at_once(issues_of: Issues) -> None:
    text = BASE + '\n[projections]\nenabled = "yes"\ninterval_s = 0\nbatch_size = 0\nintervall_s = 5\n' + HDLC_METER
    issues = issues_of(text)

    assert "expected true or false, got" in by_key(issues, "projections.enabled").message
    assert "must be greater than 0" in by_key(issues, "projections.interval_s").message
    assert "must be between 1 and 100000, got 0" in by_key(issues, "projections.batch_size").message
    typo = by_key(issues, "projections.intervall_s")
    assert "unknown key" in typo.message and "did you mean 'interval_s'?" in typo.message
    assert len(issues) == 4


def test_projections_must_be_a_table(issues_of: Issues) -> None:
    issues = issues_of("projections = true\n" + BASE + HDLC_METER)
    assert by_key(issues, "projections").message.startswith("expected a table, got")


def test_example_config_documents_every_projections_key() -> None:
    path = REPO / "config" / "example-fleet.toml"
    config = load_config(path)
    assert config.projections == DEFAULT_PROJECTIONS  # the example shows the defaults
    text = path.read_text()
    section = text[text.index("\n[projections]\n"):]
    for key in ("enabled", "interval_s", "batch_size"):
        assert f"\n{key} = " in section, key
