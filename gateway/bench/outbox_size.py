"""How large the outbox file gets against its bound: ``python -m gateway.bench.outbox_size``.

``outbox_max_mb`` bounds the payload of the pending events (envelope JSON, stream id, event id:
``OutboxState.bytes``), not the file. This fills a fresh outbox the way a polling gateway does during
an outage (one put per poll and stream, until the first put is refused) with steady-state poll events
as the normalizer makes them (every 15 minutes per meter: 4 ``RegisterRead``, one
``IntervalsRecorded`` with one row of two channels, one ``ClockChecked``; real event ids, metadata and
codec), then reports the files on disk against the bound:

* ``db_bytes``: the main file once the WAL is checkpointed into it (what the data takes: rows,
  the event id and (stream, seq) indexes, page fill);
* ``wal_bytes``: the ``-wal`` file as the filling left it (SQLite checkpoints every ~1000 pages but
  does not shrink the WAL, so it stays at its high-water mark, about 4 MiB, whatever the bound);
* ``total_bytes``: main file + WAL + ``-shm`` before the checkpoint, what ``du`` shows while the
  gateway runs;
* then everything is settled as forwarded (as the forwarder does once the far store is back):
  ``drained_db_bytes`` is the main file afterwards (SQLite does not give pages back: the file stays
  at its peak, the free pages are reused), and ``forwarded_id_bytes`` what each remembered forwarded
  event id costs (``outbox_forwarded`` and its index; kept ``forwarded_retention_s``, a week, and
  not counted by the bound).

Deterministic for given arguments (the events and the SQLite page layout do not depend on time).
"""
from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import anyio

from gateway.domain.events import ClockChecked, IntervalRow, IntervalsRecorded, RegisterRead
from gateway.domain.mapper import to_new_event
from gateway.history.outbox import Outbox, OutboxFull, Settlement
from gateway.store.model import EventMetadata, NewEvent
from gateway.domain.streams import stream_id

MIB = 1024 * 1024
_START = datetime(2026, 11, 26, 0, 0, tzinfo=timezone.utc)
_PERIOD = timedelta(minutes=15)
_IMPORT, _EXPORT = "1.0.1.8.0.255", "1.0.2.8.0.255"
_REGISTERS = (
    (_IMPORT, "active_energy_import", "Wh"),
    (_EXPORT, "active_energy_export", "Wh"),
    ("1.0.1.7.0.255", "active_power_import", "W"),
    ("1.0.32.7.0.255", "voltage_l1", "V"),
)


@dataclass(frozen=True, slots=True)
class SizeReport:
    max_bytes: int
    meters: int
    events: int  # pending when the first put was refused
    payload_bytes: int  # what the bound counts (OutboxState.bytes)
    db_bytes: int  # main file after a WAL checkpoint
    wal_bytes: int  # -wal file before the checkpoint
    total_bytes: int  # main + -wal + -shm before the checkpoint
    db_ratio: float  # db_bytes / max_bytes
    total_ratio: float  # total_bytes / max_bytes
    payload_per_event: float
    db_bytes_per_event: float
    drained_db_bytes: int  # main file after every event was settled as forwarded
    forwarded_id_bytes: float  # pages of outbox_forwarded + its index, per forwarded event


def poll_events(meter_id: str, poll: int, gateway_id: str = "gw-substation-01") -> list[NewEvent]:
    """The events of poll number ``poll`` of ``meter_id`` in a steady 15-minute cadence."""
    end = _START + (poll + 1) * _PERIOD
    read_time = end + timedelta(seconds=7, milliseconds=412)
    imported = Decimal(12_345_678) + poll * 250
    exported = Decimal(345_678) + poll * 3
    events = [
        RegisterRead(meter_id=meter_id, obis=obis, quantity=quantity,
                     value=value, unit=unit, capture_time=end, read_time=read_time)
        for (obis, quantity, unit), value in zip(
            _REGISTERS, (imported, exported, Decimal(1_000 + poll % 977), Decimal("231.4")))
    ]
    row = IntervalRow(end_time=end, values={_IMPORT: imported, _EXPORT: exported},
                      units={_IMPORT: "Wh", _EXPORT: "Wh"}, status=0)
    events.append(IntervalsRecorded(meter_id=meter_id, profile_obis="1.0.99.1.0.255",
                                    capture_period_s=900, rows=(row,)))
    events.append(ClockChecked(meter_id=meter_id, meter_time=read_time + timedelta(seconds=2),
                               gateway_time=read_time, offset_s=Decimal(2)))
    metadata = EventMetadata(gateway_id=gateway_id, recorded_at=read_time,
                             correlation_id=f"poll:{meter_id}:{read_time.isoformat()}")
    return [to_new_event(event, metadata) for event in events]


def _files(path: Path) -> tuple[int, int, int]:
    main = path.stat().st_size
    wal = Path(f"{path}-wal")
    shm = Path(f"{path}-shm")
    return (main, wal.stat().st_size if wal.exists() else 0, shm.stat().st_size if shm.exists() else 0)


async def measure(path: Path, max_bytes: int, meters: int = 100) -> SizeReport:
    """Fill a fresh outbox at ``path`` until a put is refused, then measure its files."""
    if path.exists():
        raise FileExistsError(f"{path} exists: the measurement needs a fresh file")
    async with await Outbox.open(path, max_bytes) as outbox:
        poll = 0
        try:
            while True:
                for meter in range(meters):
                    meter_id = f"MTR{meter:06d}"
                    events = poll_events(meter_id, poll)
                    await outbox.put(stream_id(meter_id, events[0].metadata.recorded_at.year), events)
                poll += 1
        except OutboxFull:
            pass
        state = await outbox.state()
        main, wal, shm = _files(path)
        with sqlite3.connect(path) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db = path.stat().st_size
        while batches := await outbox.next_batches(max_streams=meters, max_events=10_000, max_bytes=max_bytes):
            await outbox.settle(Settlement(forwarded={
                batch.stream_id: tuple(e.seq for e in batch.events) for batch in batches}))
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        forwarded = conn.execute(
            "SELECT sum(pgsize) FROM dbstat WHERE name IN ('outbox_forwarded', 'outbox_forwarded_at')"
        ).fetchone()[0]
    total = main + wal + shm
    return SizeReport(
        max_bytes=max_bytes, meters=meters, events=state.depth, payload_bytes=state.bytes,
        db_bytes=db, wal_bytes=wal, total_bytes=total,
        db_ratio=round(db / max_bytes, 3), total_ratio=round(total / max_bytes, 3),
        payload_per_event=round(state.bytes / max(state.depth, 1), 1),
        db_bytes_per_event=round(db / max(state.depth, 1), 1),
        drained_db_bytes=path.stat().st_size,
        forwarded_id_bytes=round(int(forwarded or 0) / max(state.depth, 1), 1),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.bench.outbox_size", description=__doc__.split("\n")[0])
    parser.add_argument("--max-mb", type=int, nargs="+", default=[1, 16, 64],
                        help="outbox_max_mb values to measure (default 1 16 64)")
    parser.add_argument("--meters", type=int, default=100, help="meters polled round-robin (default 100)")
    parser.add_argument("--json", action="store_true", help="one JSON object per bound")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="gateway-outbox-size-") as tmp:
        for mb in args.max_mb:
            report = anyio.run(measure, Path(tmp) / f"outbox-{mb}.sqlite3", mb * MIB, args.meters)
            if args.json:
                print(json.dumps(asdict(report), sort_keys=True))
            else:
                print(f"outbox_max_mb = {mb}: {report.events} events, {report.payload_bytes} payload bytes "
                      f"({report.payload_per_event} per event); file {report.db_bytes} bytes "
                      f"({report.db_ratio}x the bound, {report.db_bytes_per_event} per event); "
                      f"with WAL and -shm {report.total_bytes} bytes ({report.total_ratio}x); drained: file "
                      f"{report.drained_db_bytes} bytes, {report.forwarded_id_bytes} bytes per forwarded id kept")
    return 0


if __name__ == "__main__":
    sys.exit(main())
