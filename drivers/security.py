"""Security settings of one meter association, as values.

Three levels are supported: no security (public client), LLS (password) and HLS-GMAC (security suite
0, authentication and encryption keys, every xDLMS APDU ciphered with security control 0x30). The
reprs never show secret material, and ``secret_values()`` lists the secrets so that log and error
redaction can check for them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from drivers.errors import ConfigError

_REDACTED = "<redacted>"


@dataclass(frozen=True)
class NoSecurity:
    """Public client: no authentication, no ciphering."""

    def secret_values(self) -> tuple[bytes, ...]:
        return ()


@dataclass(frozen=True)
class LowLevelSecurity:
    """LLS: the password travels in the AARQ (IEC 62056-5-3 §9.2.2.2.2)."""

    password: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.password, bytes) or not self.password:
            raise ConfigError(None, "LLS password must be non-empty bytes")

    def __repr__(self) -> str:
        return f"LowLevelSecurity(password={_REDACTED})"

    def secret_values(self) -> tuple[bytes, ...]:
        return (self.password,)


@dataclass(frozen=True)
class HlsGmacSecurity:
    """HLS-GMAC, security suite 0 (AES-128-GCM): both global keys are required since every APDU
    after the AARQ is authenticated and encrypted (security control 0x30)."""

    authentication_key: bytes = field(repr=False)
    encryption_key: bytes = field(repr=False)
    # None lets the session pick "uti" + 5 random bytes per association (dlms-cosem's default).
    client_system_title: bytes | None = None

    def __post_init__(self) -> None:
        for name in ("authentication_key", "encryption_key"):
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != 16:
                raise ConfigError(None, f"HLS-GMAC {name} must be 16 bytes (security suite 0)")
        if self.client_system_title is not None and len(self.client_system_title) != 8:
            raise ConfigError(None, "client system title must be 8 bytes")

    def __repr__(self) -> str:
        return (
            f"HlsGmacSecurity(authentication_key={_REDACTED}, encryption_key={_REDACTED}, "
            f"client_system_title={self.client_system_title!r})"
        )

    def secret_values(self) -> tuple[bytes, ...]:
        return (self.authentication_key, self.encryption_key)


SecuritySettings = NoSecurity | LowLevelSecurity | HlsGmacSecurity
