"""Sans-IO decoding of what meters put on the wire: HDLC frames, wrapper PDUs, xDLMS/ACSE APDUs, A-XDR data.

No socket or serial port here: bytes in, frozen values out, typed errors (``FrameError``/``DecodeError``)
for anything malformed. Sessions and transports drive these functions; ``gateway decode`` renders them.
"""
from drivers.decode.apdu import Apdu, decode_apdu, decode_apdu_exact, decode_apdus
from drivers.decode.axdr import Data, DataType, decode_data, decode_data_exact, encode_data
from drivers.decode.cipher import SecurityKeys, decipher, encipher, gmac, parse_ciphered
from drivers.decode.cosem_time import ClockStatus, CosemDateTime
from drivers.decode.errors import (BlockTransferError, ChecksumError, DateTimeError, DecodeError, DecodeLayerError,
                                   DecryptionError, FrameError)
from drivers.decode.gbt import GbtReassembler, GeneralBlockTransfer, parse_gbt
from drivers.decode.hdlc import HdlcFrame, HdlcFrameReader, SegmentReassembler, encode_frame, parse_frame, split_frames
from drivers.decode.message import DecodedMessage, decode_message

__all__ = [
    "Apdu", "decode_apdu", "decode_apdu_exact", "decode_apdus", "Data", "DataType", "decode_data",
    "decode_data_exact", "encode_data", "SecurityKeys", "decipher", "encipher", "gmac", "parse_ciphered",
    "ClockStatus", "CosemDateTime", "BlockTransferError", "ChecksumError", "DateTimeError", "DecodeError",
    "DecodeLayerError", "DecryptionError", "FrameError", "GbtReassembler", "GeneralBlockTransfer", "parse_gbt",
    "HdlcFrame", "HdlcFrameReader", "SegmentReassembler", "encode_frame", "parse_frame", "split_frames",
    "DecodedMessage", "decode_message",
]
