"""`gateway decode`: decode meter bytes given as hex (HDLC frame(s), wrapper PDU or bare APDU) for a field engineer.

Layers are auto-detected and printed top-down (frames, APDUs, data) as text or ``--json``. Ciphered
APDUs are deciphered with ``--key``/``--auth-key`` (or ``env:NAME`` to read a key from the environment,
keeping it out of shell history). Keys are never printed, and secrets carried by the bytes themselves
(the LLS password in an AARQ's calling-authentication-value, a dedicated key in a plain
InitiateRequest) are masked unless ``--show-secrets`` is given; HLS challenges are not secrets and are
shown. Bad input: one clear line on stderr, exit 1.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from drivers.decode import DecodeLayerError, SecurityKeys, decode_message
from drivers.decode.text import render_json, render_text
from gateway.config.secrets import ENV_NAME, looks_like_secret


class UsageError(Exception):
    """Bad command-line input (never carries key material)."""


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "decode", help="decode DLMS/COSEM bytes (HDLC frames, wrapper PDU or APDU) given as hex",
        description="Decode HDLC frame(s), a DLMS wrapper PDU or a bare APDU. Spaces and newlines in the hex "
                    "are ignored; '-' reads hex from stdin. Keys given are never printed; secrets found in the "
                    "bytes (the LLS password of an AARQ, a dedicated key) are shown as <masked> unless "
                    "--show-secrets is given. HLS challenges are shown.")
    parser.add_argument("hex", nargs="+", metavar="HEX", help="hex bytes, or '-' for stdin")
    parser.add_argument("--key", help="global (or broadcast) encryption key, hex or env:NAME")
    parser.add_argument("--auth-key", help="authentication key, hex or env:NAME; the GCM tag is verified if given")
    parser.add_argument("--dedicated-key", help="dedicated key for ded-ciphered APDUs, hex or env:NAME")
    parser.add_argument("--system-title", help="server system title (8 bytes hex) for service-specific "
                                               "glo-/ded- APDUs, which do not carry it")
    parser.add_argument("--timezone", help="the meter's configured timezone (e.g. Europe/Oslo) for date-times "
                                           "whose deviation is unspecified")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--show-secrets", action="store_true",
                        help="show the LLS password of an AARQ (authentication_value) and dedicated keys instead "
                             "of <masked>; mind the terminal, scrollback and logs")
    parser.set_defaults(func=run)


def _hex(value: str, what: str) -> bytes:
    cleaned = "".join(value.split()).replace(":", "")
    if cleaned.lower().startswith("0x"):
        cleaned = cleaned[2:]
    try:
        return bytes.fromhex(cleaned)
    except ValueError:
        raise UsageError(f"{what} is not valid hex") from None


def _key(value: str | None, what: str) -> bytes | None:
    if value is None:
        return None
    if value.startswith("env:"):
        name = value[4:]
        if not ENV_NAME.match(name) or looks_like_secret(name):
            # Never echo it: a key typed after env: instead of the variable's name is the key itself.
            raise UsageError(f"{what}: env: must be followed by the name of an environment variable, not a key")
        if name not in os.environ:
            raise UsageError(f"{what}: environment variable {name} is not set")
        value = os.environ[name]
    key = _hex(value, what)
    if len(key) not in (16, 32):
        raise UsageError(f"{what} must be 16 or 32 bytes, got {len(key)}")
    return key


def _input(args: argparse.Namespace) -> bytes:
    parts = [sys.stdin.read() if item == "-" else item for item in args.hex]
    data = _hex(" ".join(parts), "input")
    if not data:
        raise UsageError("no bytes given")
    return data


def run(args: argparse.Namespace) -> int:
    try:
        data = _input(args)
        keys = None
        if args.key or args.auth_key or args.dedicated_key or args.system_title:
            title = _hex(args.system_title, "--system-title") if args.system_title else None
            if title is not None and len(title) != 8:
                raise UsageError(f"--system-title must be 8 bytes, got {len(title)}")
            keys = SecurityKeys(encryption_key=_key(args.key, "--key"),
                                authentication_key=_key(args.auth_key, "--auth-key"),
                                dedicated_key=_key(args.dedicated_key, "--dedicated-key"), system_title=title)
        try:
            timezone = ZoneInfo(args.timezone) if args.timezone else None
        except (ZoneInfoNotFoundError, ValueError):
            raise UsageError(f"unknown timezone {args.timezone!r}") from None
        message = decode_message(data, keys)
    except UsageError as exc:
        print(f"gateway decode: {exc}", file=sys.stderr)
        return 1
    except DecodeLayerError as exc:
        print(f"gateway decode: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(render_json(message, timezone, show_secrets=args.show_secrets), indent=2))
    else:
        print(render_text(message, timezone, show_secrets=args.show_secrets))
    return 0
