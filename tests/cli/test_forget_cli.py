"""Crypto-shredding end to end through the CLI: `gateway meters assign` (a real subprocess), then
`gateway forget` and `gateway meters assignment` (the same CLI in-process: each interpreter start costs
seconds).

Afterwards no byte of the personal fields (in UTF-8, UTF-16, hex or base64) and no byte of the
destroyed key is in any file beside the store (event store main file, -wal, -shm, key store, unique
index), the assignment loads with its fields erased, ``PersonalDataErased`` is in the stream without
the data, and the meter's readings and snapshot are exactly what they were.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import anyio
import pytest

from gateway.cli import main
from gateway.domain.events import RegisterRead
from gateway.domain.mapper import decode, to_new_event
from gateway.personal.assignments import Assignments
from gateway.personal.crypto import ERASED
from gateway.personal.events import PersonalDataErased, assignment_stream_id
from gateway.personal.keys import SqliteKeyStore
from gateway.personal.unique_index import UniqueIndex
from gateway.history.repository import MeterRepository
from gateway.store import EventMetadata, RecordedEvent, Snapshot
from gateway.store.sqlite import SqliteEventStore
from gateway.domain.streams import stream_id

from tests.cli import run_gateway
from tests.personal import encodings, files_containing

T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
METER = "kam-omni-0001"
IMPORT = "1.0.1.8.0.255"
# Long enough that each encoding is a distinctive needle, within the fields' rules.
POSTAL_CODE = "NW1W 6XE-ZQ98"
HOUSE_NUMBER = "221B/ZX-977"
ACTIVATION_CODE = "QXJ7K2M9WPRT55HV"

FLEET = """
gateway_id = "gw-test"
default_timezone = "Europe/Copenhagen"

[store]
kind = "sqlite"
path = "{db}"

[[concentrators]]
id = "dc-1"
host = "127.0.0.1"
port = 4059
framing = "wrapper"

[[meters]]
id = "{meter}"
make = "kamstrup"
profile = "omnipower"
connection = "dc-1"
wport = 1
security = {{ level = "none" }}
max_power_w = 55200
"""


def run_in_process(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The same CLI in this process: spares a ~3 s interpreter start per call."""
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def personal_needles() -> list[bytes]:
    return [n for value in (POSTAL_CODE, HOUSE_NUMBER, ACTIVATION_CODE) for n in encodings(value.encode())]


async def write_readings(db: Path) -> None:
    store = await SqliteEventStore.open(db)
    try:
        events = [
            to_new_event(RegisterRead(METER, IMPORT, "active_energy_import", Decimal(1000 + n), "Wh",
                                      T0 + timedelta(minutes=15 * n), T0 + timedelta(minutes=15 * n, seconds=3)),
                         EventMetadata("gw-test", T0 + timedelta(minutes=15 * n)))
            for n in range(8)
        ]
        await store.append(stream_id(METER, 2026), events, 0)
        repository = MeterRepository(store, snapshot_every=1)
        assert await repository.maybe_snapshot(METER, 2026, await repository.load(METER, 2026))
    finally:
        await store.aclose()


@pytest.mark.slow
def test_forget_leaves_no_personal_byte_and_keeps_the_readings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "gateway.db"
    config = tmp_path / "fleet.toml"
    config.write_text(FLEET.format(db=db, meter=METER))
    anyio.run(write_readings, db)

    done = run_gateway("meters", "assign", "--config", str(config), "--meter", METER, "--postal-code",
                       POSTAL_CODE, "--house-number", HOUSE_NUMBER, "--activation-code", ACTIVATION_CODE,
                       "--json")
    assert done.returncode == 0, done.stderr
    assignment_id = json.loads(done.stdout)["assignmentId"]
    assert "activationCode" not in json.loads(done.stdout)  # given, not generated: not echoed

    code, out, err = run_in_process(capsys, "meters", "assignment", "--config", str(config),
                                    "--assignment", assignment_id, "--json")
    assert code == 0, err
    assert json.loads(out)["postalCode"] == POSTAL_CODE and json.loads(out)["erased"] is False

    before = anyio.run(inspect_before, tmp_path, assignment_id)
    # Encrypted from the start: the plaintext was never written; the key is in the key store.
    assert files_containing(tmp_path, personal_needles()) == []
    assert files_containing(tmp_path, encodings(before.key))

    code, out, err = run_in_process(capsys, "forget", "--config", str(config), "--assignment", assignment_id)
    assert code == 0, err
    assert "personal data erased" in out
    code, out, _ = run_in_process(capsys, "forget", "--config", str(config), "--assignment", assignment_id)
    assert code == 0 and "already" in out

    assert files_containing(tmp_path, encodings(before.key)) == []
    assert files_containing(tmp_path, personal_needles()) == []

    code, out, err = run_in_process(capsys, "meters", "assignment", "--config", str(config),
                                    "--assignment", assignment_id, "--json")
    assert code == 0, err
    after = json.loads(out)
    assert after["erased"] is True and after["postalCode"] is None and after["activationCode"] is None
    anyio.run(check_after, tmp_path, assignment_id, before)


@dataclass(frozen=True)
class Before:
    key: bytes
    readings: list[RecordedEvent]
    snapshot: Snapshot | None


async def inspect_before(directory: Path, assignment_id: str) -> Before:
    store = await SqliteEventStore.open(directory / "gateway.db")
    keys = await SqliteKeyStore.open(directory / "gateway.keys.db")
    index = await UniqueIndex.open(directory / "gateway.unique.db")
    try:
        key = await keys.create(assignment_id)  # the existing key (create is idempotent)
        assert len(await index.entries(assignment_id)) == 2
        return Before(key.material, await store.load(stream_id(METER, 2026)),
                      await store.load_snapshot(stream_id(METER, 2026)))
    finally:
        for closeable in (index, keys, store):
            await closeable.aclose()


async def check_after(directory: Path, assignment_id: str, before: Before) -> None:
    store = await SqliteEventStore.open(directory / "gateway.db")
    keys = await SqliteKeyStore.open(directory / "gateway.keys.db")
    index = await UniqueIndex.open(directory / "gateway.unique.db")
    try:
        loaded = await Assignments(store, keys, index, "gw-test").load(assignment_id)
        assert (loaded.postal_code, loaded.house_number, loaded.activation_code) == (ERASED,) * 3
        assert loaded.meter_id == METER and loaded.erased_at is not None
        recorded = await store.load(assignment_stream_id(assignment_id))
        assert [r.type for r in recorded] == ["MeterAssigned", "PersonalDataErased"]
        erased = decode(recorded[1])
        assert isinstance(erased, PersonalDataErased) and erased.assignment_id == assignment_id
        assert set(erased.fields) == {"postal_code", "house_number", "activation_code"}
        assert await index.entries(assignment_id) == []  # meter id and code are free again
        # The readings and the snapshot are untouched.
        assert await store.load(stream_id(METER, 2026)) == before.readings
        snapshot = await store.load_snapshot(stream_id(METER, 2026))
        assert snapshot == before.snapshot and snapshot is not None
        state = await MeterRepository(store).load(METER, 2026)
        assert state.registers[IMPORT].value == Decimal(1007)
    finally:
        for closeable in (index, keys, store):
            await closeable.aclose()


def test_bad_input_is_refused_without_echoing_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "fleet.toml"
    config.write_text(FLEET.format(db=tmp_path / "gateway.db", meter=METER))
    code, _, err = run_in_process(capsys, "meters", "assign", "--config", str(config), "--meter", METER,
                                  "--postal-code", "<script>!", "--house-number", "1")
    assert code == 2 and "postal code" in err and "<script>" not in err
    code, _, err = run_in_process(capsys, "meters", "assign", "--config", str(config), "--meter", "nope",
                                  "--postal-code", "1234 AB", "--house-number", "1")
    assert code == 2 and "no meter 'nope'" in err
    code, _, err = run_in_process(capsys, "forget", "--config", str(config), "--assignment", "no-such-thing")
    assert code == 1 and "no assignment" in err
    code, _, err = run_in_process(capsys, "forget", "--config", str(config), "--assignment", "bad/id")
    assert code == 2 and "invalid assignment id" in err


def test_a_generated_activation_code_is_printed_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "fleet.toml"
    config.write_text(FLEET.format(db=tmp_path / "gateway.db", meter=METER))
    code, out, err = run_in_process(capsys, "meters", "assign", "--config", str(config), "--meter", METER,
                                    "--postal-code", "1234 ab", "--house-number", "7", "--json")
    assert code == 0, err
    printed = json.loads(out)
    assert len(printed["activationCode"]) == 12
    code, out, err = run_in_process(capsys, "meters", "assignment", "--config", str(config),
                                    "--assignment", printed["assignmentId"], "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert (shown["postalCode"], shown["activationCode"]) == ("1234 AB", printed["activationCode"])
