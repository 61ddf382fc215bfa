"""The shipped systemd unit keeps its promises: non-root, restarts on failure, hardened, config checked."""
from __future__ import annotations

from collections import defaultdict

from .conftest import REPO


def _unit() -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    section = ""
    for line in (REPO / "config" / "meter-gateway.service").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        sections[section][key].append(value)
    return sections


def test_service_runs_unprivileged_and_restarts_on_failure() -> None:
    service = _unit()["Service"]

    assert service["User"] == ["meter-gateway"] and service["User"] != ["root"]
    assert service["Restart"] == ["on-failure"]
    assert service["NoNewPrivileges"] == ["yes"] and service["CapabilityBoundingSet"] == [""]
    assert service["ProtectSystem"] == ["strict"] and service["StateDirectory"] == ["meter-gateway"]
    assert service["KillSignal"] == ["SIGTERM"]
    assert any("check-config /etc/meter-gateway/fleet.toml" in v for v in service["ExecStartPre"])
    assert any("gateway run --config /etc/meter-gateway/fleet.toml" in v for v in service["ExecStart"])
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]  # `gateway run` reloads on SIGHUP
    assert _unit()["Install"]["WantedBy"] == ["multi-user.target"]
