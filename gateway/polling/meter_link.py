"""How the gateway reaches one meter: its transport and DLMS session, built from the fleet config.

``open_session`` picks the transport of the meter's connection (DLMS wrapper or HDLC over TCP to a
concentrator, or the optical port), its addresses (the fleet's where given, else the make's profile),
and its security with the secrets resolved at this moment (a secret file is read at each poll) and
registered with the log redaction before any byte is sent.
"""
from __future__ import annotations

from collections.abc import Mapping

from drivers.meters import MeterProfile
from drivers.security import HlsGmacSecurity, LowLevelSecurity, NoSecurity, SecuritySettings
from drivers.session import DlmsSession, InvocationCounterStore
from drivers.transport.base import Transport
from drivers.transport.hdlc import HdlcTcpTransport
from drivers.transport.wrapper import WrapperTransport
from gateway.config.model import ConcentratorConfig, FleetConfig, MeterConfig, OpticalPortConfig
from gateway.config.logsetup import register_secret


def open_session(
    fleet: FleetConfig,
    meter: MeterConfig,
    profile: MeterProfile,
    *,
    counters: InvocationCounterStore,
    environ: Mapping[str, str],
    retries: int,
) -> DlmsSession:
    """A session with ``meter`` (not yet opened: ``async with`` it). Raises ``DriverError`` for a bad
    setting and ``SecretUnavailable`` for a secret that cannot be read."""
    connection = fleet.connection(meter.connection)
    return DlmsSession(
        _transport(meter, profile, connection),
        security=_security(meter, environ),
        timeout_s=connection.timeouts.response_s,
        retries=retries,
        use_release=profile.use_release,
        max_pdu_size=profile.max_pdu_size,
        invocation_counters=counters,
    )


def _transport(
    meter: MeterConfig, profile: MeterProfile, connection: ConcentratorConfig | OpticalPortConfig
) -> Transport:
    client = _given(meter.client_address, profile.client_address_for(meter.security.level))
    logical = _given(meter.logical_address, profile.server_logical_address)
    physical = _given(meter.physical_address, profile.server_physical_address)
    if isinstance(connection, OpticalPortConfig):
        from drivers.transport.optical import OpticalTransport  # pyserial only where needed

        return OpticalTransport(
            meter.id, connection.device, mode_e=connection.sign_on == "mode_e", baud_rate=connection.baud,
            client_address=client, server_logical_address=logical,
            server_physical_address=physical, link_timeout_s=connection.timeouts.response_s,
        )
    if connection.framing == "wrapper":
        return WrapperTransport(
            meter.id, connection.host, connection.port, client_wport=client,
            server_wport=_given(meter.wport, profile.server_wport), connect_timeout_s=connection.timeouts.connect_s,
        )
    return HdlcTcpTransport(
        meter.id, connection.host, connection.port, connect_timeout_s=connection.timeouts.connect_s,
        client_address=client, server_logical_address=logical,
        server_physical_address=physical, link_timeout_s=connection.timeouts.response_s,
    )


def _security(meter: MeterConfig, environ: Mapping[str, str]) -> SecuritySettings:
    sec = meter.security
    if sec.level == "lls":
        assert sec.password is not None  # load_config guarantees it
        password = sec.password.resolve(environ).reveal()
        register_secret(password)
        return LowLevelSecurity(password)
    if sec.level == "hls_gmac":
        assert sec.authentication_key is not None and sec.encryption_key is not None
        ak = sec.authentication_key.resolve_key(16, environ).reveal()
        ek = sec.encryption_key.resolve_key(16, environ).reveal()
        register_secret(ak)
        register_secret(ek)
        return HlsGmacSecurity(ak, ek, sec.client_system_title)
    return NoSecurity()


def _given(configured: int | None, default: int) -> int:
    """The fleet config's address when it sets one (0 is a valid wPort), else the profile's."""
    return default if configured is None else configured


__all__ = ["open_session"]
