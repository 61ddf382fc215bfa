"""Typed errors of the sans-IO decoding layer (HDLC framing, APDUs, A-XDR data, ciphering, date-times).

Nothing from the parsing code or from dlms-cosem escapes untyped: every failure is a ``FrameError`` (the
bytes do not form a valid HDLC frame / wrapper PDU) or a ``DecodeError`` (a well-framed payload whose
content cannot be understood). They slot into the driver hierarchy of ``drivers.errors`` (an
``except drivers.errors.FrameError`` catches ours too); the decoder rarely knows the meter, so ``meter``
is optional. Messages never contain key material.
"""
from __future__ import annotations

from drivers import errors as driver_errors


class DecodeLayerError(driver_errors.DriverError):
    """Base of every error raised by ``drivers.decode``."""

    def __init__(self, message: str, *, meter: str | None = None) -> None:
        driver_errors.DriverError.__init__(self, meter, message)

    @property
    def meter(self) -> str | None:
        return self.meter_id


class FrameError(DecodeLayerError, driver_errors.FrameError):
    """The bytes are not a valid HDLC frame or wrapper PDU (flags, length, HCS/FCS, addressing)."""


class ChecksumError(FrameError):
    """HCS or FCS mismatch (CRC-16/X.25): the frame was corrupted or cut in transit."""


class DecodeError(DecodeLayerError, driver_errors.DecodeError):
    """A well-framed payload that cannot be decoded (truncated, unknown tag, malformed A-XDR/BER)."""


class DecryptionError(DecodeError, driver_errors.AuthenticationFailed):
    """A ciphered APDU could not be deciphered: no key given, wrong key, or authentication tag mismatch."""


class BlockTransferError(DecodeError):
    """General block transfer blocks out of sequence (e.g. a continuation block without its first block)."""


class DateTimeError(DecodeError):
    """A COSEM date-time that cannot be turned into an instant (bad fields, or no timezone for it)."""
