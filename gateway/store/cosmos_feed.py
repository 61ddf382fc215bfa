"""``read_all`` for the Cosmos DB backend: the change feed, per feed range, with resumable checkpoints.

Each feed range (physical partition) is read through the SDK's continuation tokens
(``query_items_change_feed``). A checkpoint is an opaque string holding, per range, the token and
which items after that token were already delivered, including how many events of a commit that did
not fit in the last page (a commit can hold more events than ``limit``). Within a range the feed is
in commit order, so each stream comes in version order; ranges are read one after the other.

The ranges are listed once, when reading starts without a checkpoint; after that the checkpoint is
the list (the SDK's tokens follow a range through splits and merges). A token names the container
(its resource id) whose feed it is a position of: a checkpoint of another container, or of one
deleted and created again under the same name, is a ``CheckpointMismatch``.
"""
from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

from azure.cosmos.aio import ContainerProxy

from gateway.store import codec
from gateway.store.base import ReadAllPage
from gateway.store.cosmos_items import COMMIT, recorded_events, translate_errors
from gateway.store.errors import CheckpointMismatch
from gateway.store.model import RecordedEvent

_CHECKPOINT_VERSION = 1


@dataclass(frozen=True, slots=True)
class RangeCursor:
    """Where reading one feed range stands: the SDK continuation, and what was delivered after it."""

    feed_range: dict[str, Any]
    token: str | None  # None: from the beginning of the feed
    delivered: tuple[tuple[str, str], ...] = ()  # (streamId, id) of items after `token` fully read
    partial: tuple[str, str, int] | None = None  # (streamId, id, events delivered) of a split commit

    def to_json(self) -> dict[str, Any]:
        return {"range": self.feed_range, "token": self.token,
                "delivered": [list(k) for k in self.delivered],
                "partial": list(self.partial) if self.partial else None}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> "RangeCursor":
        partial = raw.get("partial")
        return cls(
            feed_range=dict(raw["range"]),
            token=raw.get("token"),
            delivered=tuple((str(s), str(i)) for s, i in raw.get("delivered", [])),
            partial=(str(partial[0]), str(partial[1]), int(partial[2])) if partial else None,
        )


def encode_checkpoint(cursors: Sequence[RangeCursor]) -> str:
    payload = {"v": _CHECKPOINT_VERSION, "ranges": [c.to_json() for c in cursors]}
    return base64.urlsafe_b64encode(codec.dumps(payload).encode()).decode()


def decode_checkpoint(checkpoint: str) -> list[RangeCursor]:
    try:
        payload = json.loads(base64.urlsafe_b64decode(checkpoint.encode()))
        if payload.get("v") != _CHECKPOINT_VERSION:
            raise ValueError("unknown version")
        return [RangeCursor.from_json(r) for r in payload["ranges"]]
    except (ValueError, KeyError, TypeError, IndexError, binascii.Error) as exc:
        raise ValueError(f"not a Cosmos read_all checkpoint: {exc}") from exc


class ChangeFeedReader:
    """Reads a container's change feed into pages of recorded events."""

    def __init__(self, container: ContainerProxy) -> None:
        self.container = container

    async def feed_ranges(self) -> list[dict[str, Any]]:
        with translate_errors(None):
            return [dict(r) async for r in self.container.read_feed_ranges()]

    async def changes(self, cursor: RangeCursor, max_items: int
                      ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of the change feed of one range: (items, continuation after them)."""
        try:
            return await self._changes(cursor, max_items)
        except ValueError as exc:
            # The SDK checks a token against the container before any request ("Invalid
            # continuation: [Mismatch collection rid]").
            if cursor.token is None:
                raise
            raise CheckpointMismatch(
                f"the checkpoint is not a position of the change feed of Cosmos DB container "
                f"{self.container.id!r} ({exc}): it was saved for another container, or this one "
                f"was deleted and created again") from exc

    async def _changes(self, cursor: RangeCursor, max_items: int
                       ) -> tuple[list[dict[str, Any]], str | None]:
        with translate_errors(None):
            if cursor.token is None:
                feed = self.container.query_items_change_feed(
                    feed_range=cursor.feed_range, start_time="Beginning", max_item_count=max_items)
            else:
                feed = self.container.query_items_change_feed(
                    continuation=cursor.token, max_item_count=max_items)
            pages: Any = feed.by_page()
            try:
                page = await pages.__anext__()
            except StopAsyncIteration:
                return [], None  # 304 Not Modified: nothing new in this range
            items = [item async for item in page]
            return items, pages.continuation_token

    async def read(self, checkpoint: str | None = None, limit: int = 1000) -> ReadAllPage:
        if limit < 1:
            raise ValueError(f"read_all limit must be at least 1, got {limit}")
        try:
            decoded = decode_checkpoint(checkpoint) if checkpoint else None
        except ValueError as exc:
            raise CheckpointMismatch(f"Cosmos DB container {self.container.id!r}: {exc}") from exc
        cursors = decoded if decoded is not None else [
            RangeCursor(feed_range=r, token=None) for r in await self.feed_ranges()]
        out: list[RecordedEvent] = []
        full = False
        for index in range(len(cursors)):
            while not full:
                cursor = cursors[index]
                want = limit - len(out)
                backlog = len(cursor.delivered) + (1 if cursor.partial else 0)
                items, token = await self.changes(cursor, backlog + want)
                if not items:
                    break
                cursors[index], full = self.consume(cursor, items, token, out, limit)
            if full:
                break
        return ReadAllPage(events=out, checkpoint=encode_checkpoint(cursors), done=not full)

    @staticmethod
    def consume(cursor: RangeCursor, items: list[dict[str, Any]], token: str | None,
                out: list[RecordedEvent], limit: int) -> tuple[RangeCursor, bool]:
        """Append the undelivered events of `items` to `out` up to `limit`; return the new cursor
        and whether `out` is full."""
        already = set(cursor.delivered)
        delivered = list(cursor.delivered)
        for item in items:
            key = (str(item.get("streamId")), str(item.get("id")))
            if key in already:
                continue
            events = (recorded_events(item, 1, len(out) + 1) if item.get("kind") == COMMIT
                      else [])
            skip = cursor.partial[2] if cursor.partial and cursor.partial[:2] == key else 0
            remaining = events[skip:]
            room = limit - len(out)
            if len(remaining) > room:
                taken = remaining[:room]
                out.extend(_renumber(taken, len(out) + 1))
                return RangeCursor(cursor.feed_range, cursor.token, tuple(delivered),
                                   (key[0], key[1], skip + room)), True
            out.extend(_renumber(remaining, len(out) + 1))
            delivered.append(key)
        # Every item of this page is delivered: continue after the page.
        return RangeCursor(cursor.feed_range, token or cursor.token), len(out) >= limit


def _renumber(events: list[RecordedEvent], start: int) -> list[RecordedEvent]:
    return [replace(e, position=start + i) for i, e in enumerate(events)]
