"""The envelope of an integration event: a CloudEvents 1.0 document in JSON structured mode.

Integration events are the gateway's public contract (README "Integration events"): a small,
versioned set of documents derived from the domain events by ``gateway.integration.contract``.
This module holds the envelope only: its attributes, its JSON bytes and the fields a publisher
fills a topic template with. It does no I/O and knows no broker.

Names, fixed for as long as the contract lives (changing one is a breaking change for every
subscriber):

- a contract type is ``meter.<kind>.v<N>`` (``meter.reading.v1``); the CloudEvents ``type`` is it
  behind ``TYPE_PREFIX`` (``com.metergateway.meter.reading.v1``), reverse-DNS as CloudEvents advises;
- ``dataschema`` is ``SCHEMA_URI_PREFIX`` + the contract type (``urn:meter-gateway:schema:meter.
  reading.v1``): a name, not an address; the schema with that ``$id`` ships in the package as
  ``gateway/integration/schemas/<contract type>.json`` (``gateway.integration.schema_files``);
- ``source`` is ``/gateways/<gateway id>``, ``subject`` the meter id.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Mapping

import orjson

from gateway.store.codec import iso_utc

SPEC_VERSION: Final[str] = "1.0"
DATA_CONTENT_TYPE: Final[str] = "application/json"
CONTENT_TYPE: Final[str] = "application/cloudevents+json; charset=utf-8"
"""The media type of a whole document (structured mode): an MQTT 5 publisher's content type."""
TYPE_PREFIX: Final[str] = "com.metergateway."
SCHEMA_URI_PREFIX: Final[str] = "urn:meter-gateway:schema:"
SOURCE_PREFIX: Final[str] = "/gateways/"

# A contract type: meter.<kind>.v<major>; the kind and version are also topic fields.
_CONTRACT_TYPE: Final = re.compile(r"^meter\.([a-z]+)\.(v[1-9][0-9]*)$")
# Gateway and meter ids share one alphabet (gateway.config.reader, gateway.domain.streams): safe as
# a URI path segment and as an MQTT topic level (no '/', '+', '#').
_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class InvalidIntegrationEvent(ValueError):
    """An integration event built from values that break the contract's rules (a programming error
    or an id outside the gateway's alphabet); names the contract type."""

    def __init__(self, contract_type: str, message: str) -> None:
        self.contract_type = contract_type
        super().__init__(f"{contract_type}: {message}")


@dataclass(frozen=True, slots=True)
class IntegrationEvent:
    """One integration event. ``data`` is already JSON (str, int, bool, lists, objects): the
    contract module turns Decimals and datetimes into plain decimal text and ``Z`` times."""

    contract_type: str  # "meter.reading.v1"
    id: str  # stable: the domain event id and the contract type (gateway.integration.contract)
    gateway: str
    meter: str
    time: datetime  # aware; the capture time of what the event reports
    data: Mapping[str, Any]

    def __post_init__(self) -> None:
        if not _CONTRACT_TYPE.match(self.contract_type):
            raise InvalidIntegrationEvent(self.contract_type, "a contract type is 'meter.<kind>.v<N>'")
        for name in ("gateway", "meter"):
            value = getattr(self, name)
            if not isinstance(value, str) or not _ID.match(value):
                raise InvalidIntegrationEvent(
                    self.contract_type, f"{name} id {value!r} is not 1-64 letters, digits, '.', '_', '-'")
        if not self.id:
            raise InvalidIntegrationEvent(self.contract_type, "id must not be empty")
        if self.time.tzinfo is None or self.time.utcoffset() is None:
            raise InvalidIntegrationEvent(self.contract_type, f"time {self.time!r} is naive")

    # -- the CloudEvents attributes --

    @property
    def specversion(self) -> str:
        return SPEC_VERSION

    @property
    def type(self) -> str:
        return TYPE_PREFIX + self.contract_type

    @property
    def source(self) -> str:
        return SOURCE_PREFIX + self.gateway

    @property
    def subject(self) -> str:
        return self.meter

    @property
    def datacontenttype(self) -> str:
        return DATA_CONTENT_TYPE

    @property
    def dataschema(self) -> str:
        return SCHEMA_URI_PREFIX + self.contract_type

    # -- forms --

    def to_dict(self) -> dict[str, Any]:
        """The CloudEvents document as a JSON-ready dict."""
        return {
            "specversion": SPEC_VERSION,
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "subject": self.subject,
            "time": iso_utc(self.time),
            "datacontenttype": DATA_CONTENT_TYPE,
            "dataschema": self.dataschema,
            "data": self.data,
        }

    def to_json(self) -> bytes:
        """The document in structured mode: compact UTF-8 JSON, keys sorted at every level, so the
        same event is the same bytes on every publish."""
        return orjson.dumps(self.to_dict(), option=orjson.OPT_SORT_KEYS)

    def topic_fields(self) -> dict[str, str]:
        """What a topic template may name: ``gateway``, ``meter``, ``type`` (the kind: "reading"),
        ``version`` ("v1") and ``contract_type`` ("meter.reading.v1"). Every value is a safe MQTT
        topic level (no '/', '+', '#')."""
        match = _CONTRACT_TYPE.match(self.contract_type)
        assert match is not None  # checked in __post_init__
        kind, version = match.groups()
        return {"gateway": self.gateway, "meter": self.meter, "type": kind, "version": version,
                "contract_type": self.contract_type}


__all__ = [
    "CONTENT_TYPE", "DATA_CONTENT_TYPE", "SCHEMA_URI_PREFIX", "SOURCE_PREFIX", "SPEC_VERSION", "TYPE_PREFIX",
    "IntegrationEvent", "InvalidIntegrationEvent",
]
