"""How the Cosmos DB backend lays out a stream, and how SDK failures become store errors.

A **commit** item holds one append: ``id`` = the first version zero-padded to 10 digits (ids sort),
``kind="commit"``, ``streamId`` (the partition key), ``firstVersion``, ``lastVersion``,
``firstRecordedAt``, ``lastRecordedAt`` and ``events``: the codec's envelopes, each with its
``version`` too. A **snapshot** item (``id="snapshot"``, ``kind="snapshot"``) lives in the same
partition.
"""
from __future__ import annotations

import ssl
from contextlib import contextmanager
from typing import Any, Iterator, Mapping, Sequence

from azure.core.exceptions import AzureError, ServiceRequestError, ServiceResponseError
from azure.cosmos.exceptions import CosmosClientTimeoutError, CosmosHttpResponseError

from gateway.store import codec
from gateway.store.cosmos_client import CosmosConfigError
from gateway.store.errors import StoreError, StoreUnavailable
from gateway.store.model import NewEvent, RecordedEvent

COMMIT = "commit"
SNAPSHOT = "snapshot"
SNAPSHOT_ID = "snapshot"
_ID_DIGITS = 10
# Worth retrying later: timeouts, throttling after the SDK's own bounded retries, server trouble.
_UNAVAILABLE_STATUS = frozenset({408, 429, 449, 500, 502, 503, 504})


def commit_id(first_version: int) -> str:
    return f"{first_version:0{_ID_DIGITS}d}"


def commit_item(stream_id: str, first_version: int, events: Sequence[NewEvent]) -> dict[str, Any]:
    # Each envelope also carries its version, so a query joining events (JOIN e IN c.events)
    # returns it without the whole commit.
    envelopes = [{**codec.event_to_dict(e), "version": first_version + i}
                 for i, e in enumerate(events)]
    return {
        "id": commit_id(first_version),
        "kind": COMMIT,
        "streamId": stream_id,
        "firstVersion": first_version,
        "lastVersion": first_version + len(events) - 1,
        "firstRecordedAt": envelopes[0]["metadata"]["recordedAt"],
        "lastRecordedAt": envelopes[-1]["metadata"]["recordedAt"],
        "events": envelopes,
    }


def recorded_events(commit: Mapping[str, Any], from_version: int, start_position: int
                    ) -> list[RecordedEvent]:
    out: list[RecordedEvent] = []
    first = int(commit["firstVersion"])
    for offset, raw in enumerate(commit["events"]):
        version = first + offset
        if version >= from_version:
            out.append(codec.recorded_from_dict(
                raw, stream_id=commit["streamId"], version=version,
                position=start_position + len(out)))
    return out


@contextmanager
def translate_errors(stream_id: str | None) -> Iterator[None]:
    """Turn SDK and network failures into the store's typed errors (never carrying the key)."""
    try:
        yield
    except StoreError:
        raise
    except CosmosHttpResponseError as exc:
        status = exc.status_code
        if status in _UNAVAILABLE_STATUS:
            raise StoreUnavailable(f"Cosmos DB answered {status}", stream_id) from exc
        if status == 404:
            raise StoreError(
                "Cosmos DB database or container not found (run `gateway store init`)"
            ) from exc
        where = "" if stream_id is None else f" for stream {stream_id!r}"
        raise StoreError(f"Cosmos DB answered {status}{where}") from exc
    except (ServiceRequestError, ServiceResponseError, CosmosClientTimeoutError, TimeoutError,
            OSError) as exc:
        if _untrusted_certificate(exc):
            raise CosmosConfigError(
                "the TLS certificate of the Cosmos DB endpoint is not trusted") from exc
        raise StoreUnavailable(f"Cosmos DB unreachable ({type(exc).__name__})", stream_id) from exc
    except AzureError as exc:
        raise StoreUnavailable(f"Cosmos DB request failed ({type(exc).__name__})", stream_id) from exc


def _untrusted_certificate(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLCertVerificationError):
            return True
        seen.add(id(current))
        inner = getattr(current, "inner_exception", None)
        current = inner if isinstance(inner, BaseException) else (
            current.__cause__ or current.__context__)
    return False
