"""`gateway simulate` as an operator runs it: a real subprocess, polled by dlms-cosem, stopped by SIGINT."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dlms_cosem.enumerations import CosemInterface

from drivers.simulator import Framing, MeterEndpoint, SecurityLevel

from tests.simulator.test_dlms_cosem_peer import attribute, decode, make_client, quiet_dlms_cosem  # noqa: F401


def endpoint_from_json(doc: dict) -> MeterEndpoint:  # type: ignore[type-arg]
    secrets = doc["test_secrets"]
    return MeterEndpoint(
        meter_id=doc["meter_id"], make=doc["make"], model=doc["model"], serial=doc["serial"],
        framing=Framing(doc["framing"]), host=doc["host"], port=doc["port"],
        server_logical_address=doc["server_logical_address"], physical_address=doc["physical_address"],
        public_client=doc["public_client"], reading_client=doc["reading_client"],
        security=SecurityLevel(doc["security"]), system_title=bytes.fromhex(doc["system_title"]),
        password=secrets["lls_password"].encode(), encryption_key=bytes.fromhex(secrets["encryption_key"]),
        authentication_key=bytes.fromhex(secrets["authentication_key"]),
    )


@pytest.mark.slow
def test_simulate_serves_until_sigint(tmp_path: Path) -> None:
    json_path = tmp_path / "endpoints.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "simulate", "--meters", "4", "--seed", "3",
         "--hdlc-address-base", "200", "--json-endpoints", str(json_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not json_path.exists():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "simulator did not write its endpoints"
            time.sleep(0.05)
        docs = json.loads(json_path.read_text())["endpoints"]
        assert len(docs) == 8 and {d["framing"] for d in docs} == {"wrapper", "hdlc"}
        assert {d["security"] for d in docs} == {"none", "lls"}
        for doc in docs:
            ep = endpoint_from_json(doc)
            client = make_client(ep, ep.security)
            with client.session():
                serial = bytes(decode(client.get(attribute(CosemInterface.DATA, "0.0.96.1.0.255", 2))))
            assert serial == ep.serial.encode()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "sim-0003" in out and "upper 1 lower 203" in out
    assert "12345678" not in out + err and "000102030405" not in out + err
