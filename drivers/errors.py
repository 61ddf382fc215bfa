"""Typed errors of the driver layer.

Everything that can go wrong while talking to a meter ends as one of these, each naming the meter it
is about. Messages are built by our own code from non-secret facts only (never from key or password
material), so ``str()`` of any of them is safe to log.
"""
from __future__ import annotations


class DriverError(Exception):
    """Base of every driver failure; ``meter_id`` is None only for configuration checks made before
    a meter is known."""

    def __init__(self, meter_id: str | None, message: str) -> None:
        super().__init__(meter_id, message)
        self.meter_id = meter_id
        self.message = message

    def __str__(self) -> str:
        if self.meter_id is None:
            return self.message
        return f"meter {self.meter_id}: {self.message}"


class MeterTimeout(DriverError):
    """The meter (or the link to it) did not answer before the deadline."""


class FrameError(DriverError):
    """A frame arrived but was corrupt (FCS/HCS, length, addressing) or out of sequence."""


class ConnectionLost(DriverError):
    """The byte stream closed or failed underneath the session."""


class AssociationRejected(DriverError):
    """The meter answered the AARQ with a rejection (or an exception response)."""

    def __init__(self, meter_id: str | None, message: str, diagnostic: str | None = None) -> None:
        super().__init__(meter_id, message)
        self.diagnostic = diagnostic


class AuthenticationFailed(DriverError):
    """Wrong password or keys: LLS rejected, HLS reply refused or not verifiable, or deciphering failed."""


class DataAccessRefused(DriverError):
    """The meter refused a GET, SET or ACTION with a result code; ``result`` is its COSEM name
    (Data-Access-Result for GET/SET, Action-Result for ACTION: "TEMPORARY_FAILURE",
    "TYPE_UNMATCHED", ...). The association stays usable."""

    def __init__(self, meter_id: str | None, message: str, result: str) -> None:
        super().__init__(meter_id, message)
        self.result = result


class AccessDenied(DataAccessRefused):
    """The meter refused one attribute or method; ``result`` is the COSEM result name. A refused GET
    is always this (whatever the result); a SET or ACTION is this for READ_WRITE_DENIED and
    SCOPE_OF_ACCESS_VIOLATED (the client's rights), a plain ``DataAccessRefused`` otherwise."""


class ServiceError(DriverError):
    """The meter answered with an ExceptionResponse or ConfirmedServiceError (not a data-access result)."""


class DecodeError(DriverError):
    """Bytes arrived intact but do not decode as the expected APDU or data."""


class UnreadableAnswer(DecodeError):
    """The answer to one request arrived whole and was meant for it (its invoke-id matched) but does
    not decode: that request fails, the association stays usable for the next one."""


class ConfigError(DriverError):
    """Settings are invalid (key length, address range, missing key for the security level)."""


class UnusableReply(DecodeError):
    """A reply arrived and decodes, but cannot be used for what was asked (a profile far larger than
    its range, a range read of a profile without a clock column); ``obis`` names the object. The
    association is still good: only the step that asked fails, the session goes on with the next."""

    def __init__(self, meter_id: str | None, message: str, obis: str) -> None:
        super().__init__(meter_id, message)
        self.obis = obis


class ProfileTooLarge(UnusableReply):
    """A profile range read answered with more rows (or bytes) than the range can hold; refused
    unread, so that a meter ignoring the range never becomes huge events."""


class ProfileUnusable(UnusableReply):
    """A profile's header makes its rows unusable for the read asked (no clock column to place a row
    in time, no capture period for interval data)."""
