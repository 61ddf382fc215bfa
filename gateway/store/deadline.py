"""A store that does not answer in time is an unavailable store.

Appenders (the batched writer, the outbox forwarder) call their store under a deadline; silence past
it becomes ``StoreUnavailable``, which they retry. A write that landed anyway is then recognised by the
retry (the store's idempotent retry, or ``gateway.store.reconcile``), so waiting no longer never
duplicates.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

from gateway.store.errors import StoreUnavailable

T = TypeVar("T")


async def within(timeout_s: float, call: Callable[[], Awaitable[T]], *, what: str = "the event store") -> T:
    """``call()``; ``StoreUnavailable`` when it has not answered after ``timeout_s``."""
    try:
        with anyio.fail_after(timeout_s):
            return await call()
    except TimeoutError:
        raise StoreUnavailable(f"{what} did not answer within {timeout_s} s") from None


__all__ = ["within"]
