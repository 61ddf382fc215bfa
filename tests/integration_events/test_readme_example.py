"""The example document in the README's "Integration events" section is what the mapping publishes
for that reading (so the documentation cannot drift from the contract) and validates."""
from __future__ import annotations

import json
import re
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from gateway.domain.events import RegisterRead
from gateway.domain.mapper import to_new_event
from gateway.integration import integration_events
from gateway.store.model import EventMetadata, RecordedEvent
from gateway.store.codec import parse_utc

from . import check_document

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_example_is_a_published_document() -> None:
    section = README.read_text().split("## Integration events", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```json\n(.*?)```", section, flags=re.S)
    example = json.loads(block)
    data = example["data"]
    read = RegisterRead(data["meterId"], data["obis"], data["quantity"], Decimal(data["value"]), data["unit"],
                        parse_utc(data["captureTime"]), parse_utc(data["readTime"]))
    new = to_new_event(read, EventMetadata(example["source"].removeprefix("/gateways/"), datetime.now().astimezone()))
    recorded = RecordedEvent(f"Meter:{read.meter_id}:{read.capture_time.year}", 1, 1, new.event_id, new.type,
                             new.schema_version, new.data, new.metadata)
    (published,) = integration_events(recorded, gateway=example["source"].removeprefix("/gateways/"))
    assert check_document(published.to_json()) == example
