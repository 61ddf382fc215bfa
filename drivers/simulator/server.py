"""anyio TCP servers for the meter simulator: DLMS wrapper (one port per meter) and HDLC buses.

Addressing conventions (what a client must use):

- Wrapper (IEC 62056-47): each meter listens on its own port, as an IP meter with its own
  address would; destination wPort 1 (management logical device), source wPort = client SAP
  (16 public, 1 reading client). PDUs to another destination wPort are dropped silently.
- HDLC over TCP: one port per RS-485 bus with up to `meters_per_bus` meters; server upper
  (logical) address 1, lower (physical) address = the meter's `hdlc_address`; client address
  16 (public) or 1 (reading client). Each TCP connection sees its own link state per meter.

- Optical probe: `MeterSimulator.optical_port(meter_id)` serves one meter on a pty (see
  `optical.py`), same HDLC addressing.

Everything binds to 127.0.0.1 (loopback only). Simulated time comes from a `SimClock`, which
tests can freeze and move so the meters' answers are exactly predictable.
"""
from __future__ import annotations

import logging
import time
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Any

import anyio
from anyio.abc import SocketStream, TaskGroup
from anyio.streams.buffered import BufferedByteReceiveStream

from drivers.simulator.cosem import PUBLIC_CLIENT_SAP, READING_CLIENT_SAP, CosemAssociation
from drivers.simulator.faults import MeterFaults
from drivers.simulator.hdlc import HdlcBus
from drivers.simulator.meter import MeterConfig, SecurityLevel, SimulatedMeter
from drivers.simulator.optical import optical_port

LOOPBACK = "127.0.0.1"
SERVER_LOGICAL_ADDRESS = 1
WRAPPER_VERSION = 1
_IO_ERRORS = (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)
log = logging.getLogger(__name__)


class Framing(str, Enum):
    WRAPPER = "wrapper"
    HDLC = "hdlc"
    BOTH = "both"


class SimClock:
    """Simulated time: `start` advancing at `speed` x real time (0 freezes it until set/advance)."""

    def __init__(self, start: datetime | None = None, speed: float = 1.0) -> None:
        if start is not None and start.tzinfo is None:
            raise ValueError("SimClock start must be timezone-aware")
        if speed < 0:
            raise ValueError("SimClock speed must be >= 0")
        self._base = start or datetime.now(timezone.utc)
        self._speed = speed
        self._mono = time.monotonic()

    def now(self) -> datetime:
        if self._speed == 0:
            return self._base
        return self._base + timedelta(seconds=(time.monotonic() - self._mono) * self._speed)

    def set(self, at: datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("SimClock.set needs a timezone-aware datetime")
        self._base, self._mono = at, time.monotonic()

    def advance(self, delta: timedelta) -> None:
        self.set(self.now() + delta)


@dataclass(frozen=True)
class SimulatorConfig:
    meters: tuple[MeterConfig, ...]
    framing: Framing = Framing.BOTH
    base_port: int = 0  # 0: ephemeral ports; else wrapper meters from here, then HDLC buses
    meters_per_bus: int = 8
    start: datetime | None = None  # simulated time at start; None = now
    speed: float = 1.0
    idle_timeout_s: float = 120.0  # a meter drops a silent connection, as real ones do

    def __post_init__(self) -> None:
        ids = [m.meter_id for m in self.meters]
        if len(set(ids)) != len(ids):
            raise ValueError("meter ids must be unique")
        if not 1 <= self.meters_per_bus <= 128:
            raise ValueError("meters_per_bus must be within 1..128")
        if not 0 <= self.base_port <= 65535:
            raise ValueError("base_port must be within 0..65535")


@dataclass(frozen=True)
class MeterEndpoint:
    """Where and how to reach one simulated meter. Secrets are left out of repr."""

    meter_id: str
    make: str
    model: str
    serial: str
    framing: Framing
    host: str
    port: int
    server_logical_address: int  # wrapper: destination wPort; HDLC: upper address
    physical_address: int | None  # HDLC lower address, None for wrapper
    public_client: int
    reading_client: int
    security: SecurityLevel
    system_title: bytes
    password: bytes = field(repr=False)
    encryption_key: bytes = field(repr=False)
    authentication_key: bytes = field(repr=False)

    def to_json(self, include_test_secrets: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "meter_id": self.meter_id, "make": self.make, "model": self.model, "serial": self.serial,
            "framing": self.framing.value, "host": self.host, "port": self.port,
            "server_logical_address": self.server_logical_address,
            "physical_address": self.physical_address,
            "public_client": self.public_client, "reading_client": self.reading_client,
            "security": self.security.value, "system_title": self.system_title.hex(),
        }
        if include_test_secrets:
            out["test_secrets"] = {
                "lls_password": self.password.decode("latin-1"),
                "encryption_key": self.encryption_key.hex(),
                "authentication_key": self.authentication_key.hex(),
            }
        return out


class MeterSimulator:
    """Serves simulated meters until the `async with` block ends."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.clock = SimClock(config.start, config.speed)
        reference = self.clock.now()
        self.meters: dict[str, SimulatedMeter] = {
            c.meter_id: SimulatedMeter(c, reference) for c in config.meters
        }
        self.endpoints: list[MeterEndpoint] = []
        self._task_group: TaskGroup | None = None
        self._buses: list[dict[int, SimulatedMeter]] = []
        if config.framing in (Framing.HDLC, Framing.BOTH):
            meters = list(self.meters.values())
            for i in range(0, len(meters), config.meters_per_bus):
                bus = {mt.config.hdlc_address: mt for mt in meters[i:i + config.meters_per_bus]}
                if len(bus) != len(meters[i:i + config.meters_per_bus]):
                    raise ValueError(f"duplicate HDLC address on bus {len(self._buses)}")
                self._buses.append(bus)

    def meter(self, meter_id: str) -> SimulatedMeter:
        try:
            return self.meters[meter_id]
        except KeyError:
            raise KeyError(f"no simulated meter {meter_id!r}") from None

    def set_faults(self, meter_id: str, faults: MeterFaults) -> None:
        """Swap a meter's faults at run time; takes effect on its next request."""
        self.meter(meter_id).faults = faults

    def optical_port(self, meter_id: str) -> AbstractAsyncContextManager[str]:
        """Serve one meter's optical probe port on a pty (mode E sign-on, then HDLC); yields the device."""
        return optical_port(self.meter(meter_id), self.clock.now)

    def endpoints_of(self, meter_id: str) -> list[MeterEndpoint]:
        return [e for e in self.endpoints if e.meter_id == meter_id]

    def endpoint(self, meter_id: str, framing: Framing) -> MeterEndpoint:
        for e in self.endpoints:
            if e.meter_id == meter_id and e.framing == framing:
                return e
        raise KeyError(f"meter {meter_id!r} has no {framing.value} endpoint")

    async def __aenter__(self) -> "MeterSimulator":
        port = self.config.base_port
        listeners: list[tuple[Any, Any]] = []
        try:
            if self.config.framing in (Framing.WRAPPER, Framing.BOTH):
                for mt in self.meters.values():
                    listener = await anyio.create_tcp_listener(local_host=LOOPBACK, local_port=port)
                    bound = listener.extra(anyio.abc.SocketAttribute.local_port)
                    port = port + 1 if port else 0
                    self.endpoints.append(self._endpoint(mt, Framing.WRAPPER, bound, None))
                    listeners.append((listener, self._wrapper_handler(mt)))
            for bus in self._buses:
                listener = await anyio.create_tcp_listener(local_host=LOOPBACK, local_port=port)
                bound = listener.extra(anyio.abc.SocketAttribute.local_port)
                port = port + 1 if port else 0
                for address, mt in bus.items():
                    self.endpoints.append(self._endpoint(mt, Framing.HDLC, bound, address))
                listeners.append((listener, self._bus_handler(bus)))
        except BaseException:
            for listener, _ in listeners:
                await listener.aclose()
            raise
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        for listener, handler in listeners:
            self._task_group.start_soon(listener.serve, handler)
        return self

    async def __aexit__(self, *exc_info: object) -> bool | None:
        assert self._task_group is not None
        self._task_group.cancel_scope.cancel()
        return await self._task_group.__aexit__(*exc_info)

    def _endpoint(self, mt: SimulatedMeter, framing: Framing, port: int, physical: int | None) -> MeterEndpoint:
        c = mt.config
        return MeterEndpoint(
            meter_id=c.meter_id, make=c.profile.make, model=c.profile.model, serial=c.serial,
            framing=framing, host=LOOPBACK, port=port, server_logical_address=SERVER_LOGICAL_ADDRESS,
            physical_address=physical, public_client=PUBLIC_CLIENT_SAP, reading_client=READING_CLIENT_SAP,
            security=c.security, system_title=c.system_title, password=c.password,
            encryption_key=c.encryption_key, authentication_key=c.authentication_key,
        )

    # -- connection handlers -----------------------------------------------------------

    def _wrapper_handler(self, mt: SimulatedMeter):  # type: ignore[no-untyped-def]
        async def handle(stream: SocketStream) -> None:
            async with stream:
                try:
                    await self._serve_wrapper(mt, stream)
                except _IO_ERRORS:
                    pass  # the client went away; that is normal for a meter
                except Exception as exc:  # one broken exchange must not stop a 1,000-meter fleet
                    # Only the type: a message could echo request bytes (an LLS password).
                    log.error("meter %s: connection dropped after %s", mt.config.meter_id, type(exc).__name__)

        return handle

    async def _serve_wrapper(self, mt: SimulatedMeter, stream: SocketStream) -> None:
        reader = BufferedByteReceiveStream(stream)
        associations: dict[int, CosemAssociation] = {}
        while True:
            with anyio.move_on_after(self.config.idle_timeout_s) as idle:
                header = await reader.receive_exactly(8)
                version = int.from_bytes(header[0:2], "big")
                source = int.from_bytes(header[2:4], "big")
                destination = int.from_bytes(header[4:6], "big")
                length = int.from_bytes(header[6:8], "big")
                apdu = await reader.receive_exactly(length) if length else b""
            if idle.cancelled_caught:
                return
            if version != WRAPPER_VERSION:
                return  # not a DLMS wrapper stream: drop the connection
            if destination != SERVER_LOGICAL_ADDRESS or mt.faults.no_answer:
                continue
            association = associations.get(source)
            if association is None:
                association = associations[source] = CosemAssociation(mt, self.clock.now, source)
            reply = association.handle(apdu)
            if mt.faults.latency_ms:
                await anyio.sleep(mt.faults.latency_ms / 1000)
            if reply.apdu is not None:
                out = (
                    WRAPPER_VERSION.to_bytes(2, "big") + destination.to_bytes(2, "big")
                    + source.to_bytes(2, "big") + len(reply.apdu).to_bytes(2, "big") + reply.apdu
                )
                await stream.send(out)
            if reply.disconnect:
                return

    def _bus_handler(self, bus: dict[int, SimulatedMeter]):  # type: ignore[no-untyped-def]
        async def handle(stream: SocketStream) -> None:
            async with stream:
                try:
                    await self._serve_bus(bus, stream)
                except _IO_ERRORS:
                    pass
                except Exception as exc:  # see _wrapper_handler
                    log.error("HDLC bus of %s: connection dropped after %s",
                              next(iter(bus.values())).config.meter_id, type(exc).__name__)

        return handle

    async def _serve_bus(self, meters: dict[int, SimulatedMeter], stream: SocketStream) -> None:
        bus = HdlcBus(meters, self.clock.now)
        while True:
            with anyio.move_on_after(self.config.idle_timeout_s) as idle:
                data = await stream.receive()
            if idle.cancelled_caught:
                return
            for out in bus.feed(data):
                if out.meter.faults.latency_ms:
                    await anyio.sleep(out.meter.faults.latency_ms / 1000)
                for frame in out.frames:
                    await stream.send(frame)
                if out.disconnect:
                    return
