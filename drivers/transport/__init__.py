"""Transports carry whole DLMS APDUs between a session and one meter.

Every transport implements ``drivers.transport.base.Transport``: the session never sees framing,
addressing or the byte stream underneath. ``wrapper`` is TCP with the DLMS wrapper (IEC 62056-47),
``hdlc`` is HDLC (IEC 62056-46) over any anyio byte stream (TCP to an RS-485 bus, or serial), and
``optical`` opens the optical probe, signs on in IEC 62056-21 mode E and then runs HDLC.
"""
from drivers.transport.base import Transport

__all__ = ["Transport"]
