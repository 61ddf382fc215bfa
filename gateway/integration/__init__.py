"""Integration events: the gateway's public, versioned event contract (README "Integration events").

Domain events stay inside; integration events are what other systems (meter data management,
billing, alarms) get: CloudEvents 1.0 JSON documents, one small set of types, each with a JSON
Schema shipped in ``schemas/``. ``contract.py`` maps stored domain events to them (pure),
``envelope.py`` is the document, ``schema_files.py`` reads the packaged schemas. This package
depends on the domain only; the publisher that sends the documents to a broker sits on top of it.
"""
from gateway.integration.contract import CONTRACT_TYPES, NOT_PUBLISHED, PUBLISHED, integration_events
from gateway.integration.envelope import CONTENT_TYPE, IntegrationEvent, InvalidIntegrationEvent

__all__ = [
    "CONTENT_TYPE", "CONTRACT_TYPES", "NOT_PUBLISHED", "PUBLISHED", "IntegrationEvent", "InvalidIntegrationEvent",
    "integration_events",
]
