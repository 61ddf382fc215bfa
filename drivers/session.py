"""An async DLMS/COSEM client association with one meter, on any transport: the I/O edge.

The protocol decisions (what to send, what an answer means, when the association is no longer
usable) live in the sans-IO ``drivers.session_core.ClientAssociation``. ``DlmsSession`` moves its
bytes through a ``Transport`` under anyio, so every wait is bounded and cancellable: it sends a
request, waits for the answer, hands it to the core and acts on the event (next block, HLS reply,
a stale answer to drop), retransmits after a timeout or a corrupt frame, and reserves client
invocation counters in an ``InvocationCounterStore`` (``drivers.counters``) ahead of their use, so
they never go back across runs or crashes. It associates (public client, LLS, HLS-GMAC suite 0),
reads with GET normal / with block transfer / with list / with range selective access, writes with
SET normal / with block transfer, invokes methods with ACTION normal, and releases.
After any failure other than a refused attribute or an unreadable answer the association is
unusable and the next poll opens a new session.
"""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from types import TracebackType

from dlms_cosem import cosem, enumerations
from dlms_cosem.cosem.capture_object import CaptureObject
from dlms_cosem.cosem.selective_access import RangeDescriptor

from drivers.counters import FileInvocationCounterStore, InvocationCounterStore  # noqa: F401  (re-exported)
from drivers.errors import AccessDenied, ConfigError, ConnectionLost, DriverError, FrameError, MeterTimeout
from drivers.logging import silence_dlms_cosem_logging
from drivers.security import HlsGmacSecurity, NoSecurity, SecuritySettings
from drivers.session_core import (
    DEFAULT_MAX_TRANSFER_BYTES,
    Acted,
    Associated,
    ClientAssociation,
    Event,
    ListValues,
    NeedNextBlock,
    NeedNextSetBlock,
    NeedsHlsReply,
    Refused,
    Released,
    Stale,
    Value,
    Written,
)
from drivers.transport.base import Transport

LOG = logging.getLogger(__name__)

CLOCK_TIME = cosem.CosemAttribute(enumerations.CosemInterface.CLOCK, cosem.Obis(0, 0, 1, 0, 0, 255), 2)


class DlmsSession:
    """One association with one meter: ``async with DlmsSession(...) as session: await session.get(...)``."""

    def __init__(
        self,
        transport: Transport,
        *,
        security: SecuritySettings | None = None,
        timeout_s: float = 10.0,
        retries: int = 1,
        use_release: bool = True,
        max_pdu_size: int = 0xFFFF,
        invocation_counters: InvocationCounterStore | None = None,
        invocation_counter_reserve: int = 256,
        client_system_title: bytes | None = None,
        challenge_factory: Callable[[int], bytes] | None = None,
        max_transfer_bytes: int = DEFAULT_MAX_TRANSFER_BYTES,
        set_block_transfer: bool = False,
    ) -> None:
        """``set_block_transfer`` proposes block transfer with SET in the AARQ (a SET larger than
        the meter's PDU size needs it). ``client_system_title`` (8 bytes; HlsGmacSecurity's own title wins) and
        ``challenge_factory`` (length -> HLS client challenge) default to random values; fixing
        them makes the requests of a session deterministic, for recording and replay."""
        self.meter_id = transport.meter_id
        self.security: SecuritySettings = security if security is not None else NoSecurity()
        if timeout_s <= 0 or retries < 0:
            raise ConfigError(self.meter_id, "timeout_s must be > 0 and retries >= 0")
        if isinstance(self.security, HlsGmacSecurity) and invocation_counters is None:
            raise ConfigError(
                self.meter_id, "HLS-GMAC needs an invocation counter store so the counter never goes back"
            )
        self.transport = transport
        self.timeout_s = timeout_s
        self.retries = retries
        self.use_release = use_release
        self.max_pdu_size = max_pdu_size
        self.invocation_counters = invocation_counters
        self.invocation_counter_reserve = max(1, invocation_counter_reserve)
        if client_system_title is not None and len(client_system_title) != 8:
            raise ConfigError(self.meter_id, "client system title must be 8 bytes")
        self.client_system_title = client_system_title
        self.challenge_factory = challenge_factory
        self.max_transfer_bytes = max_transfer_bytes
        self.set_block_transfer = set_block_transfer
        self._core: ClientAssociation | None = None
        self._reserved_until = 0
        silence_dlms_cosem_logging()

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> DlmsSession:
        try:
            await self.transport.open()
            await self.associate()
        except BaseException:
            await self.transport.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None and self.usable:
                try:
                    await self.release()
                except DriverError as error:
                    # The readings are already in hand; a meter that ignores RLRQ must not spoil them.
                    LOG.warning("release failed, closing the link anyway: %s", error)
        finally:
            await self.transport.aclose()

    @property
    def client_invocation_counter(self) -> int | None:
        """The next client invocation counter (ciphered associations), for recorders and tests."""
        return None if self._core is None else self._core.client_invocation_counter

    @property
    def usable(self) -> bool:
        """True while the association can take another request (a refused or unreadable answer
        leaves it usable; a lost link, a timeout or a broken block transfer does not)."""
        return self._core is not None and self._core.usable

    async def associate(self) -> None:
        """AARQ/AARE, then for HLS the reply to the meter's challenge and the check of its answer."""
        first_ic = 0
        if isinstance(self.security, HlsGmacSecurity):
            assert self.invocation_counters is not None
            first_ic = await self.invocation_counters.load(self.meter_id)
            self._reserved_until = first_ic
        self._core = core = ClientAssociation(
            self.meter_id,
            self.security,
            use_release=self.use_release,
            max_pdu_size=self.max_pdu_size,
            first_invocation_counter=first_ic,
            client_system_title=self.client_system_title,
            challenge_factory=self.challenge_factory,
            max_transfer_bytes=self.max_transfer_bytes,
            set_block_transfer=self.set_block_transfer,
        )
        event = await self._request(core.associate, phase="association")
        if isinstance(event, NeedsHlsReply):
            event = await self._request(core.hls_reply, phase="hls")
        assert isinstance(event, Associated), event
        LOG.debug("meter %s associated (%s)", self.meter_id, type(self.security).__name__)

    async def release(self) -> None:
        """RLRQ/RLRE; for meters configured with ``use_release=False`` only ends the association locally."""
        core = self._ready()
        if self.use_release:
            await self._io(core, self._reserve_invocation_counters())
        payload = core.release()
        if payload is not None:
            event = await self._exchange(payload, phase="release")
            assert isinstance(event, Released), event

    # -- reading -----------------------------------------------------------------------------

    async def get(self, attribute: cosem.CosemAttribute, *, access: RangeDescriptor | None = None) -> bytes:
        """The A-XDR encoded value of one attribute (block transfer handled).

        Raises AccessDenied (with the data-access result) if the meter refuses the attribute, and
        UnreadableAnswer if its answer does not decode; the session stays usable after either.
        """
        core = self._ready()
        event = await self._transfer(lambda: core.get(attribute, access))
        assert isinstance(event, Value), event
        return event.data

    async def get_with_list(
        self, attributes: Sequence[cosem.CosemAttribute | cosem.CosemAttributeWithSelection]
    ) -> list[bytes | AccessDenied]:
        """Several attributes in one GET-with-list; per attribute its A-XDR bytes or an AccessDenied value."""
        core = self._ready()
        if not attributes:
            return []
        event = await self._transfer(lambda: core.get_with_list(attributes))
        assert isinstance(event, ListValues), event
        return list(event.values)

    async def get_profile_range(
        self,
        buffer: cosem.CosemAttribute,
        start: datetime,
        end: datetime,
        *,
        restricting_object: cosem.CosemAttribute = CLOCK_TIME,
    ) -> bytes:
        """A profile generic buffer restricted to [start, end] by range selective access (descriptor 1),
        all columns (dlms-cosem cannot encode a column selection).

        ``start``/``end`` must be aware; they are sent with their UTC offset as the meter's deviation.
        """
        if start.tzinfo is None or end.tzinfo is None:
            raise ConfigError(self.meter_id, "profile range bounds must be timezone-aware datetimes")
        if end < start:
            raise ConfigError(self.meter_id, "profile range ends before it starts")
        descriptor = RangeDescriptor(
            restricting_object=CaptureObject(cosem_attribute=restricting_object, data_index=0),
            from_value=start,
            to_value=end,
        )
        return await self.get(buffer, access=descriptor)

    # -- writing and methods -----------------------------------------------------------------

    async def set(self, attribute: cosem.CosemAttribute, value: bytes) -> None:
        """Write ``value`` (the A-XDR bytes of a Data) to one attribute; with block transfer when the
        request would exceed the meter's PDU size.

        Raises ConfigError, before sending, for a value that needs block transfer when the
        association did not negotiate it (``set_block_transfer``), AccessDenied (READ_WRITE_DENIED, SCOPE_OF_ACCESS_VIOLATED: the client's rights) or
        DataAccessRefused (any other data-access result, e.g. TYPE_UNMATCHED), and UnreadableAnswer
        if the answer does not decode; the session stays usable after any of them.
        """
        core = self._ready()
        event = await self._request(lambda: core.set(attribute, value), phase="set")
        while isinstance(event, NeedNextSetBlock):
            event = await self._request(core.next_set_block, phase="set")
        if isinstance(event, Refused):
            raise event.error
        assert isinstance(event, Written), event

    async def action(self, method: cosem.CosemMethod, parameters: bytes | None = None) -> bytes | None:
        """Invoke one method with ``parameters`` (A-XDR bytes of a Data, None: none); returns the
        A-XDR bytes of its return parameters, if the meter sent any.

        Raises AccessDenied or DataAccessRefused (with the Action-Result name) when the meter refuses.
        """
        core = self._ready()
        event = await self._request(lambda: core.action(method, parameters), phase="action")
        if isinstance(event, Refused):
            raise event.error
        assert isinstance(event, Acted), event
        return event.data

    # -- the exchange ------------------------------------------------------------------------

    async def _transfer(self, first_request: Callable[[], bytes]) -> Event:
        """A GET and, while the meter says more blocks follow, the request for each next one."""
        core = self._ready()
        event = await self._request(first_request, phase="get")
        while isinstance(event, NeedNextBlock):
            event = await self._request(core.next_block, phase="get")
        if isinstance(event, Refused):
            raise event.error
        return event

    async def _request(self, make: Callable[[], bytes], *, phase: str) -> Event:
        """Reserve invocation counters, then have the core encode the request, and exchange it."""
        await self._io(self._require_core(), self._reserve_invocation_counters())
        return await self._exchange(make(), phase=phase)

    async def _exchange(self, payload: bytes, *, phase: str) -> Event:
        """Send ``payload`` and return the core's event for its answer; stale answers are dropped
        and the request goes again after a timeout or a corrupt frame. A failed transport marks
        the association broken; for the failures the core raises, the core decides."""
        core = self._require_core()
        await self._io(core, self.transport.send(payload))
        attempt = 0
        stale: list[Stale] = []
        while True:
            try:
                raw = await self.transport.receive(self.timeout_s)
            except (MeterTimeout, FrameError) as exc:
                if attempt >= self.retries:
                    core.mark_broken()
                    if stale and isinstance(exc, MeterTimeout):
                        raise self._only_stale(exc, stale, phase) from exc
                    raise
                attempt += 1
                LOG.debug("meter %s: %s during %s, retransmitting (%d/%d)", self.meter_id,
                          type(exc).__name__, phase, attempt, self.retries)
                await self._io(core, self._retry(core))
                continue
            except DriverError:
                core.mark_broken()
                raise
            try:
                event = core.receive(raw)
            except DriverError:
                await self._learn_counter_from(core)
                raise
            if isinstance(event, Stale):
                LOG.debug("meter %s: dropped a stale answer during %s", self.meter_id, phase)
                stale.append(event)
                continue
            return event

    def _only_stale(self, timeout: MeterTimeout, stale: list[Stale], phase: str) -> MeterTimeout:
        """The timeout of a request the meter did answer, but only under other invoke-ids (a meter or
        concentrator mixing up sessions, or answering another client): not silence, so a WARNING."""
        ids = sorted({s.invoke_id for s in stale if s.invoke_id is not None})
        ours = next((s.expected for s in stale if s.expected is not None), None)
        what = (f"{len(stale)} answer(s) during {phase} carried invoke-id(s) {ids}, not ours ({ours}), and were "
                "dropped as stale or foreign")
        LOG.warning("meter %s: %s; no answer with our invoke-id within %d attempt(s)", self.meter_id, what,
                    self.retries + 1)
        return MeterTimeout(self.meter_id, f"{timeout.message}; {what}")

    @staticmethod
    async def _io(core: ClientAssociation, operation: Awaitable[None]) -> None:
        try:
            await operation
        except DriverError:
            core.mark_broken()
            raise

    async def _retry(self, core: ClientAssociation) -> None:
        """Send the request again. A link with its own retransmission (HDLC: same N(S), the server
        repeats its answer) gets the same frame. On a plain stream (wrapper) a ciphered request is
        re-protected under a new invocation counter, since the meter refuses a replayed counter;
        a duplicate answer is then dropped by its invoke-id."""
        if getattr(self.transport, "link_retransmission", False) or not core.retry_needs_new_bytes:
            await self.transport.retransmit()
            return
        await self._reserve_invocation_counters()
        await self.transport.send(core.reprotect())

    async def _reserve_invocation_counters(self) -> None:
        core = self._core
        if core is None or self.invocation_counters is None or not core.ciphered:
            return
        # Each APDU (and the HLS reply) uses at most one counter value; reserve ahead in blocks so
        # a crash after use can never make the stored counter lag behind what the meter has seen.
        if core.client_invocation_counter + 2 > self._reserved_until:
            self._reserved_until = core.client_invocation_counter + 2 + self.invocation_counter_reserve
            await self.invocation_counters.save(self.meter_id, self._reserved_until)

    async def _learn_counter_from(self, core: ClientAssociation) -> None:
        hint = core.take_invocation_counter_hint()
        if hint is not None and self.invocation_counters is not None:
            # The meter names the counter it expects: the next association starts there.
            await self.invocation_counters.save(self.meter_id, hint)

    # -- helpers -----------------------------------------------------------------------------

    def _require_core(self) -> ClientAssociation:
        if self._core is None:
            raise ConnectionLost(self.meter_id, "not associated")
        return self._core

    def _ready(self) -> ClientAssociation:
        core = self._require_core()
        core.check_ready()
        return core
