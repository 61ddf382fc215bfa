"""The outbox file against its bound, as ``gateway.bench.outbox_size`` measures it (the figure the
outbox docstring gives): a real file filled with poll events to the first refusal."""
from __future__ import annotations

from pathlib import Path

import pytest

from gateway.bench.outbox_size import MIB, measure

pytestmark = pytest.mark.anyio


@pytest.mark.slow
async def test_the_data_of_a_full_outbox_takes_about_1_3_times_its_bound_plus_the_wal(tmp_path: Path) -> None:
    report = await measure(tmp_path / "outbox.sqlite3", 2 * MIB, meters=20)
    assert report.max_bytes - 1_000 < report.payload_bytes <= report.max_bytes  # filled to the bound
    assert report.events > 4_000
    assert 1.2 < report.db_ratio < 1.45
    # The WAL's high-water mark (about 1000 pages of 4 KiB) does not depend on the bound.
    assert 3.5 * MIB < report.wal_bytes < 4.5 * MIB
    assert report.drained_db_bytes >= report.db_bytes  # a drained file keeps its size
    assert 100 < report.forwarded_id_bytes < 200
