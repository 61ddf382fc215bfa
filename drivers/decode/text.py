"""Human-readable text and JSON renderings of decoded frames, APDUs and COSEM data.

The data tree is printed one element per line with short type names (``struct[25]``, ``u32 1468``,
``oct[6] 0101010800FF (OBIS 1-1:1.8.0.255)``), the notation of the real-meter trace files, so output can
be compared with a trace by eye. Date-times are shown as sent and, when possible, in UTC (deviation
from the meter, else the timezone given). Keys are never part of any rendering, and secrets found in the
bytes themselves (an LLS password in an AARQ, a dedicated key in a plain InitiateRequest) are shown as
``<masked>`` unless ``show_secrets`` is given.
"""
from __future__ import annotations

import copy
import datetime as _dt
from typing import Any

from drivers.decode.apdu import (AcseApdu, ActionResponse, Apdu, Ciphered, ConfirmedServiceError, DataNotification,
                                 EventNotification, ExceptionResponse, GetRequest, GetResponse, Obis, SetResponse,
                                 AttributeDescriptor)
from drivers.decode.axdr import Data, DataType
from drivers.decode.cosem_time import CosemDateTime
from drivers.decode.errors import DecodeLayerError
from drivers.decode.gbt import GeneralBlockTransfer
from drivers.decode.message import DecodedMessage, FrameInfo, Reassembled, ReassembledData


MASKED = "<masked>"


def _acse_fields(apdu: AcseApdu, show_secrets: bool) -> dict[str, Any]:
    if show_secrets or not apdu.secrets:
        return apdu.fields
    fields = copy.deepcopy(apdu.fields)
    for path in apdu.secrets:
        *parents, last = path.split(".")
        table = fields
        for key in parents:
            table = table[key]
        table[last] = MASKED
    return fields


def _holds_secrets(apdu: Apdu | None) -> bool:
    """Whether the APDU (or the one deciphered inside it) carries a secret: its raw bytes would too."""
    while isinstance(apdu, Ciphered):
        apdu = apdu.inner
    return isinstance(apdu, AcseApdu) and bool(apdu.secrets)


def _printable(raw: bytes) -> bool:
    return bool(raw) and all(0x20 <= b < 0x7F for b in raw)


def _escape(text: str) -> str:
    out = []
    for ch in text:
        code = ord(ch)
        if ch == "\0":
            out.append("\\0")
        elif ch in '"\\':
            out.append("\\" + ch)
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        else:
            out.append(ch)
    return "".join(out)


def utc_text(value: CosemDateTime, timezone: _dt.tzinfo | None) -> str | None:
    try:
        return value.to_utc(timezone).isoformat().replace("+00:00", "Z")
    except DecodeLayerError:
        return None


def describe_date_time(value: CosemDateTime, timezone: _dt.tzinfo | None) -> str:
    utc = utc_text(value, timezone)
    return f"{value}" + (f" (UTC {utc})" if utc else "")


def data_lines(data: Data, timezone: _dt.tzinfo | None = None, indent: int = 0) -> list[str]:
    """One line per element, children indented by two spaces."""
    pad = "  " * indent
    value = data.value
    if data.type in (DataType.ARRAY, DataType.STRUCTURE):
        lines = [f"{pad}{data.type_name}"]
        for item in value:  # type: ignore[union-attr]
            lines.extend(data_lines(item, timezone, indent + 1))
        return lines
    if data.type is DataType.OCTET_STRING:
        raw: bytes = value  # type: ignore[assignment]
        line = f"{pad}{data.type_name} {raw.hex().upper()}"
        if len(raw) == 6:
            line += f" (OBIS {Obis.from_bytes(raw)})"
        elif len(raw) == 12 and not _printable(raw):
            line += f" (date-time {describe_date_time(CosemDateTime.from_bytes(raw), timezone)})"
        elif _printable(raw):
            line += f' "{raw.decode("ascii")}"'
        return [line]
    if data.type in (DataType.VISIBLE_STRING, DataType.UTF8_STRING):
        return [f'{pad}{data.type_name} "{_escape(value)}"']  # type: ignore[arg-type]
    if data.type is DataType.DATE_TIME:
        return [f"{pad}{data.type_name} {describe_date_time(value, timezone)}"]  # type: ignore[arg-type]
    if data.type in (DataType.DATE, DataType.TIME):
        return [f"{pad}{data.type_name} {value.hex().upper()}"]  # type: ignore[union-attr]
    if data.type in (DataType.NULL, DataType.DONT_CARE):
        return [f"{pad}{data.type_name}"]
    if data.type is DataType.BOOLEAN:
        return [f"{pad}{data.type_name} {'true' if value else 'false'}"]
    return [f"{pad}{data.type_name} {value}"]


def data_json(data: Data, timezone: _dt.tzinfo | None = None) -> dict[str, Any]:
    value = data.value
    out: dict[str, Any] = {"type": data.type.name.lower().replace("_", "-")}
    if data.type in (DataType.ARRAY, DataType.STRUCTURE):
        out["items"] = [data_json(item, timezone) for item in value]  # type: ignore[union-attr]
    elif data.type is DataType.OCTET_STRING:
        raw: bytes = value  # type: ignore[assignment]
        out["hex"] = raw.hex().upper()
        if len(raw) == 6:
            out["obis"] = str(Obis.from_bytes(raw))
        elif len(raw) == 12 and not _printable(raw):
            out["date_time"] = date_time_json(CosemDateTime.from_bytes(raw), timezone)
        elif _printable(raw):
            out["text"] = raw.decode("ascii")
    elif data.type is DataType.DATE_TIME:
        out["value"] = date_time_json(value, timezone)  # type: ignore[arg-type]
    elif isinstance(value, bytes):
        out["hex"] = value.hex().upper()
    elif value is not None:
        out["value"] = value
    return out


def date_time_json(value: CosemDateTime, timezone: _dt.tzinfo | None) -> dict[str, Any]:
    return {
        "raw": value.raw.hex().upper(), "text": str(value), "deviation_minutes": value.deviation,
        "clock_status": None if value.status is None else value.status.flags(),
        "utc": utc_text(value, timezone),
    }


def _descriptor(desc: AttributeDescriptor) -> str:
    text = f"class {desc.class_id} {desc.obis} attribute {desc.attribute}"
    if desc.selector is not None:
        text += f" selective access {desc.selector}"
    return text


def _result_lines(result: Data | str, timezone: _dt.tzinfo | None, indent: int) -> list[str]:
    if isinstance(result, str):
        return ["  " * indent + f"data-access-result: {result}"]
    return data_lines(result, timezone, indent)


def apdu_lines(apdu: Apdu, timezone: _dt.tzinfo | None = None, indent: int = 0, *,
               show_secrets: bool = False) -> list[str]:
    pad = "  " * indent
    if isinstance(apdu, DataNotification):
        dt = "absent" if apdu.date_time is None else describe_date_time(apdu.date_time, timezone)
        quirk = " [date-time tagged 09 0C: old Kamstrup firmware]" if apdu.date_time_tagged else ""
        lines = [f"{pad}data-notification invoke-id={apdu.long_invoke_id_and_priority:08X} datetime={dt}{quirk}"]
        return lines + data_lines(apdu.body, timezone, indent + 1)
    if isinstance(apdu, EventNotification):
        dt = "absent" if apdu.time is None else describe_date_time(apdu.time, timezone)
        return ([f"{pad}event-notification-request time={dt} {_descriptor(apdu.attribute)}"]
                + data_lines(apdu.value, timezone, indent + 1))
    if isinstance(apdu, GetRequest):
        lines = [f"{pad}get-request-{apdu.kind} invoke-id={apdu.invoke_id:02X}"]
        if apdu.block_number is not None:
            lines[0] += f" block={apdu.block_number}"
        for desc in apdu.attributes:
            lines.append(f"{pad}  {_descriptor(desc)}")
            if desc.selection is not None:
                lines.extend(data_lines(desc.selection, timezone, indent + 2))
        return lines
    if isinstance(apdu, GetResponse):
        head = f"{pad}get-response-{apdu.kind} invoke-id={apdu.invoke_id:02X}"
        if apdu.block_number is not None:
            head += f" block={apdu.block_number} last={'yes' if apdu.last_block else 'no'}"
        lines = [head]
        if apdu.raw_data is not None:
            lines.append(f"{pad}  raw-data {len(apdu.raw_data)} bytes {apdu.raw_data.hex().upper()}")
        for result in apdu.results:
            lines.extend(_result_lines(result, timezone, indent + 1))
        return lines
    if isinstance(apdu, SetResponse):
        return [f"{pad}set-response-{apdu.kind} invoke-id={apdu.invoke_id:02X} result={', '.join(apdu.results)}"]
    if isinstance(apdu, ActionResponse):
        lines = [f"{pad}action-response invoke-id={apdu.invoke_id:02X} result={apdu.result}"]
        if apdu.return_data is not None:
            lines.extend(_result_lines(apdu.return_data, timezone, indent + 1))
        return lines
    if isinstance(apdu, ExceptionResponse):
        return [f"{pad}exception-response {apdu.text}"]
    if isinstance(apdu, ConfirmedServiceError):
        return [f"{pad}confirmed-service-error service={apdu.service} type={apdu.error_type} error={apdu.error}"]
    if isinstance(apdu, AcseApdu):
        lines = [f"{pad}{apdu.name}"] + [f"{pad}  {k}: {v}" for k, v in _acse_fields(apdu, show_secrets).items()]
        if apdu.secrets and not show_secrets:
            lines.append(f"{pad}  (masked: {', '.join(apdu.secrets)}; --show-secrets shows them)")
        return lines
    if isinstance(apdu, GeneralBlockTransfer):
        return [f"{pad}general-block-transfer block={apdu.block_number} last={'yes' if apdu.last_block else 'no'} "
                f"streaming={'yes' if apdu.streaming else 'no'} window={apdu.window} ack={apdu.block_number_ack} "
                f"data={len(apdu.data)} bytes"]
    if isinstance(apdu, Ciphered):
        h = apdu.header
        title = f" system-title={h.system_title.hex().upper()}" if h.system_title else ""
        lines = [f"{pad}{h.name}{title} SC={h.security_control:02X} IC={h.invocation_counter:08X} "
                 f"payload={len(h.payload)} bytes"]
        if apdu.inner is None:
            lines.append(f"{pad}  (ciphered: give the key to decipher)")
            return lines
        verdict = "tag verified" if apdu.tag_verified else (
            "tag NOT verified (no authentication key)" if h.authenticated else "no tag (encryption only)")
        plaintext = apdu.plaintext.hex().upper()  # type: ignore[union-attr]
        if _holds_secrets(apdu) and not show_secrets:
            plaintext = MASKED
        lines.append(f"{pad}  deciphered, {verdict}: {plaintext}")
        return lines + apdu_lines(apdu.inner, timezone, indent + 1, show_secrets=show_secrets)
    raise TypeError(f"no rendering for {type(apdu).__name__}")


def _frame_line(info: FrameInfo) -> str:
    f = info.frame
    seq = ""
    if f.send_seq is not None:
        seq += f" N(S)={f.send_seq}"
    if f.recv_seq is not None:
        seq += f" N(R)={f.recv_seq}"
    text = (f"HDLC {f.kind.value} frame: length={f.length} segmented={'yes' if f.segmented else 'no'} "
            f"dst={f.dst} src={f.src} control={f.control:02X}{seq} P/F={int(f.poll_final)} "
            f"info={len(f.info)} bytes, HCS/FCS ok")
    if info.llc is not None:
        text += f", LLC {info.llc.hex(' ').upper()}"
    if info.parameters is not None:
        text += ", parameters " + " ".join(f"{k}={v}" for k, v in info.parameters.items())
    return text


def render_text(message: DecodedMessage, timezone: _dt.tzinfo | None = None, *, show_secrets: bool = False) -> str:
    lines: list[str] = []
    for info in message.frames:
        lines.append(_frame_line(info))
    for wrapper in message.wrappers:
        lines.append(f"wrapper: version={wrapper.version} source-wport={wrapper.source_wport} "
                     f"destination-wport={wrapper.destination_wport} length={wrapper.length}")
    for item in message.apdus:
        if isinstance(item, ReassembledData):
            lines.append(f"data joined from {item.blocks} get-response data block(s), {len(item.raw)} bytes:")
            lines.extend(data_lines(item.data, timezone, 1))
        elif isinstance(item, Reassembled):
            lines.append(f"reassembled from {item.blocks} general-block-transfer block(s), {len(item.raw)} bytes:")
            lines.extend(apdu_lines(item.apdu, timezone, 1, show_secrets=show_secrets))
        else:
            lines.extend(apdu_lines(item, timezone, show_secrets=show_secrets))
    for note in message.incomplete:
        lines.append(f"note: {note}")
    return "\n".join(lines)


def apdu_json(apdu: Apdu, timezone: _dt.tzinfo | None = None, *, show_secrets: bool = False) -> dict[str, Any]:
    def result(r: Data | str) -> dict[str, Any]:
        return {"data_access_result": r} if isinstance(r, str) else data_json(r, timezone)

    if isinstance(apdu, DataNotification):
        return {"apdu": "data-notification", "long_invoke_id_and_priority": apdu.long_invoke_id_and_priority,
                "invoke_id": apdu.invoke_id, "priority_high": apdu.priority_high, "confirmed": apdu.confirmed,
                "date_time": None if apdu.date_time is None else date_time_json(apdu.date_time, timezone),
                "date_time_tagged": apdu.date_time_tagged, "body": data_json(apdu.body, timezone)}
    if isinstance(apdu, EventNotification):
        return {"apdu": "event-notification-request",
                "time": None if apdu.time is None else date_time_json(apdu.time, timezone),
                "attribute": _descriptor(apdu.attribute), "value": data_json(apdu.value, timezone)}
    if isinstance(apdu, GetRequest):
        return {"apdu": f"get-request-{apdu.kind}", "invoke_id": apdu.invoke_id, "block_number": apdu.block_number,
                "attributes": [_descriptor(d) for d in apdu.attributes]}
    if isinstance(apdu, GetResponse):
        return {"apdu": f"get-response-{apdu.kind}", "invoke_id": apdu.invoke_id, "last_block": apdu.last_block,
                "block_number": apdu.block_number,
                "raw_data": None if apdu.raw_data is None else apdu.raw_data.hex().upper(),
                "results": [result(r) for r in apdu.results]}
    if isinstance(apdu, SetResponse):
        return {"apdu": f"set-response-{apdu.kind}", "invoke_id": apdu.invoke_id, "results": list(apdu.results)}
    if isinstance(apdu, ActionResponse):
        return {"apdu": "action-response", "invoke_id": apdu.invoke_id, "result": apdu.result,
                "return_data": None if apdu.return_data is None else result(apdu.return_data)}
    if isinstance(apdu, ExceptionResponse):
        return {"apdu": "exception-response", "state_error": apdu.state_error, "service_error": apdu.service_error,
                "text": apdu.text}
    if isinstance(apdu, ConfirmedServiceError):
        return {"apdu": "confirmed-service-error", "service": apdu.service, "error_type": apdu.error_type,
                "error": apdu.error}
    if isinstance(apdu, AcseApdu):
        out = {"apdu": apdu.name, **_acse_fields(apdu, show_secrets)}
        if apdu.secrets and not show_secrets:
            out["masked"] = list(apdu.secrets)
        return out
    if isinstance(apdu, GeneralBlockTransfer):
        return {"apdu": "general-block-transfer", "block_number": apdu.block_number, "last_block": apdu.last_block,
                "streaming": apdu.streaming, "window": apdu.window, "block_number_ack": apdu.block_number_ack,
                "data": apdu.data.hex().upper()}
    if isinstance(apdu, Ciphered):
        h = apdu.header
        return {"apdu": h.name, "system_title": None if h.system_title is None else h.system_title.hex().upper(),
                "security_control": h.security_control, "invocation_counter": h.invocation_counter,
                "payload_length": len(h.payload), "deciphered": apdu.inner is not None,
                "tag_verified": apdu.tag_verified,
                "plaintext": None if apdu.plaintext is None else (
                    MASKED if _holds_secrets(apdu) and not show_secrets else apdu.plaintext.hex().upper()),
                "inner": None if apdu.inner is None else apdu_json(apdu.inner, timezone, show_secrets=show_secrets)}
    raise TypeError(f"no rendering for {type(apdu).__name__}")


def render_json(message: DecodedMessage, timezone: _dt.tzinfo | None = None, *,
                show_secrets: bool = False) -> dict[str, Any]:
    frames = []
    for info in message.frames:
        f = info.frame
        frames.append({"kind": f.kind.value, "length": f.length, "segmented": f.segmented, "dst": str(f.dst),
                       "src": str(f.src), "control": f.control, "send_seq": f.send_seq, "recv_seq": f.recv_seq,
                       "poll_final": f.poll_final, "info_length": len(f.info),
                       "llc": None if info.llc is None else info.llc.hex().upper(), "parameters": info.parameters})
    apdus = []
    for item in message.apdus:
        if isinstance(item, ReassembledData):
            apdus.append({"joined_get_response_blocks": item.blocks, "raw": item.raw.hex().upper(),
                          "data": data_json(item.data, timezone)})
        elif isinstance(item, Reassembled):
            raw = MASKED if _holds_secrets(item.apdu) and not show_secrets else item.raw.hex().upper()
            apdus.append({"reassembled_from_blocks": item.blocks, "raw": raw,
                          "apdu": apdu_json(item.apdu, timezone, show_secrets=show_secrets)})
        else:
            apdus.append(apdu_json(item, timezone, show_secrets=show_secrets))
    return {"transport": message.transport, "frames": frames,
            "wrappers": [vars(w) for w in message.wrappers], "apdus": apdus, "incomplete": list(message.incomplete)}


__all__ = ["data_lines", "data_json", "apdu_lines", "apdu_json", "render_text", "render_json"]
