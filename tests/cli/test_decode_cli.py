"""`gateway decode` as a real subprocess, and `gateway bench dlms` through its argparse hook."""
from __future__ import annotations

import argparse
import json
import subprocess

import pytest

from drivers.decode import DecodeError, decode_message, encode_frame
from drivers.logging import secret_forms
from drivers.recording import SessionRecording, load_recording
from gateway.bench.dlms import register_dlms
from gateway.cli import main

from tests.cli import run_gateway
from tests.decode import SESSIONS, recorded_aare_with_malformed_initiate_response, trace

KAMSTRUP = trace("kamstrup_han_2017_old_firmware_amstomqttbridge.txt")
VECTORS = trace("gcm_hls_test_vectors_published_keys_NOT_PHYSICAL.txt")
DUMMY_KEY = b"MYDUMMYGLOBALKEY".hex()


def gateway(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return run_gateway("decode", *args, stdin=stdin)


def spaced(data: bytes) -> str:
    return "\n".join(data[i:i + 32].hex(" ") for i in range(0, len(data), 32))


@pytest.mark.slow
def test_decode_hdlc_frame_as_text() -> None:
    result = gateway(spaced(KAMSTRUP.frame(1).data), "--timezone", "Europe/Oslo")
    assert result.returncode == 0, result.stderr
    assert "HDLC UI frame: length=227" in result.stdout
    assert "datetime=2017-10-20 03:43:30 dev=unspec st=00 (UTC 2017-10-20T01:43:30Z)" in result.stdout
    assert "    u32 1468" in result.stdout and 'vis "6841121BN243101040"' in result.stdout


@pytest.mark.slow
def test_decode_stdin_json_several_frames() -> None:
    lg = trace("lg_gbt_push_annotated_amsreader.txt")
    result = gateway("-", "--json", stdin=spaced(lg.frame(1).data + lg.frame(2).data + lg.frame(3).data))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert len(report["frames"]) == 3
    reassembled = report["apdus"][2]
    assert reassembled["reassembled_from_blocks"] == 2
    assert reassembled["apdu"]["body"]["items"][2] == {"type": "octet-string", "hex": "363031313039",
                                                       "obis": "54-48:49.49.48.57"}
    assert report["apdus"][3]["invoke_id"] == 0x8E2


@pytest.mark.slow
def test_decode_ciphered_apdu_with_keys_never_prints_them() -> None:
    result = gateway(VECTORS.frame(4).data.hex(), "--key", DUMMY_KEY, "--auth-key", DUMMY_KEY)
    assert result.returncode == 0, result.stderr
    assert "general-glo-ciphering" in result.stdout and "tag verified" in result.stdout
    assert "data-notification invoke-id=000001DB datetime=absent" in result.stdout
    assert DUMMY_KEY.lower() not in (result.stdout + result.stderr).lower()


# The cases below go through the same CLI entry point in-process (a subprocess costs ~2 s of imports).

def test_decode_with_wrong_key_fails_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    wrong = "00112233445566778899AABBCCDDEEFF"
    assert main(["decode", VECTORS.frame(4).data.hex(), "--key", DUMMY_KEY, "--auth-key", wrong]) == 1
    out, err = capsys.readouterr()
    assert "DecryptionError" in err and "tag mismatch" in err
    assert wrong.lower() not in (out + err).lower() and DUMMY_KEY not in (out + err).lower()


def test_decode_key_from_environment(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METER_EK", DUMMY_KEY)
    assert main(["decode", VECTORS.frame(4).data.hex(), "--key", "env:METER_EK"]) == 0
    assert "tag NOT verified (no authentication key)" in capsys.readouterr().out


@pytest.mark.parametrize(("args", "message"), [
    ((KAMSTRUP.frame(8).data.hex(),), "FrameError"),
    (("7E A0 zz",), "not valid hex"),
    (("C4 01",), "DecodeError"),
    ((VECTORS.frame(4).data.hex(), "--key", "0011"), "--key must be 16 or 32 bytes"),
    ((KAMSTRUP.frame(1).data.hex(), "--timezone", "Mars/Olympus"), "unknown timezone"),
])
def test_decode_errors_exit_1_with_one_clear_line(args: tuple[str, ...], message: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", *args]) == 1
    out, err = capsys.readouterr()
    assert message in err and out == ""
    assert err.count("\n") == 1


def test_bench_dlms_json(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="gateway bench")
    register_dlms(parser.add_subparsers())
    args = parser.parse_args(["dlms", "--json", "--seconds", "0.05"])
    assert args.func(args) == 0
    report = json.loads(capsys.readouterr().out)
    names = [case["name"] for case in report["cases"]]
    assert names == ["get-register-response", "profile-buffer-96-rows"]
    for case in report["cases"]:
        assert case["ours_ops_per_s"] > 0 and case["dlms_cosem_ops_per_s"] > 0
        assert case["ratio_ours_to_dlms_cosem"] == pytest.approx(
            case["ours_ops_per_s"] / case["dlms_cosem_ops_per_s"], rel=0.01)


@pytest.mark.slow
def test_decode_json_of_a_malformed_initiate_response_prints_nothing_from_dlms_cosem() -> None:
    # dlms-cosem prints the bad conformance bytes (bytearray(...)) before raising: that must not reach
    # stdout (a --json consumer reads it) nor stderr (one clear line only).
    aare = recorded_aare_with_malformed_initiate_response()
    result = gateway(aare.hex(), "--json")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == "gateway decode: DecodeError: malformed aare: ValueError\n"


def test_decoding_a_malformed_initiate_response_prints_nothing(capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(DecodeError, match="malformed aare"):
        decode_message(recorded_aare_with_malformed_initiate_response())
    assert capfd.readouterr() == ("", "")


def recorded_aarq(fixture: str) -> tuple[bytes, SessionRecording]:
    recording = load_recording(SESSIONS / fixture)
    aarq = next(event.apdu for event in recording.events if event.kind == "send")
    assert aarq[0] == 0x60
    return aarq, recording


LLS_FIXTURES = ["kamstrup_omnipower_lls.json", "landis_gyr_e450_lls.json"]


def password_forms(recording: SessionRecording) -> set[str]:
    password = recording.header.secrets.password
    assert password  # the recorded test password (header test_secrets), e.g. "12345678"
    return secret_forms(password)  # hex (either case, spaced or not), repr, ASCII


@pytest.mark.slow
def test_decode_json_masks_the_lls_password_of_a_recorded_aarq() -> None:
    aarq, recording = recorded_aarq("kamstrup_omnipower_lls.json")
    result = gateway(aarq.hex(), "--json")
    assert result.returncode == 0, result.stderr
    assert not any(form in result.stdout + result.stderr for form in password_forms(recording))
    report = json.loads(result.stdout)["apdus"][0]
    assert report["apdu"] == "aarq" and report["authentication"] == "lls"
    assert report["authentication_value"] == "<masked>" and report["masked"] == ["authentication_value"]


@pytest.mark.parametrize("fixture", LLS_FIXTURES)
@pytest.mark.parametrize("output", ["text", "json"])
def test_decode_masks_the_lls_password_unless_show_secrets(fixture: str, output: str,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    aarq, recording = recorded_aarq(fixture)
    forms = password_forms(recording)
    extra = ["--json"] if output == "json" else []

    assert main(["decode", aarq.hex(), *extra]) == 0
    out, err = capsys.readouterr()
    assert not any(form in out + err for form in forms)
    assert "masked" in out and "authentication_value" in out

    assert main(["decode", aarq.hex(), "--show-secrets", *extra]) == 0
    out, _ = capsys.readouterr()
    assert recording.header.secrets.password.hex().upper() in out  # type: ignore[union-attr]
    assert "<masked>" not in out


def test_decode_masks_the_lls_password_in_an_hdlc_frame_but_shows_an_hls_challenge(
        capsys: pytest.CaptureFixture[str]) -> None:
    lls, recording = recorded_aarq("landis_gyr_e450_lls.json")  # recorded over HDLC: framed as sent
    # I-frame N(S)=0 N(R)=0 P=1 to server logical 1 / physical 17 from public client 16, LLC E6 E6 00.
    frame = encode_frame(b"\x02\x23", b"\x21", 0x10, b"\xe6\xe6\x00" + lls)
    assert main(["decode", frame.hex(), "--json"]) == 0
    out, _ = capsys.readouterr()
    report = json.loads(out)
    assert report["transport"] == "hdlc" and report["apdus"][0]["authentication_value"] == "<masked>"
    assert not any(form in out for form in password_forms(recording))

    hls, hls_recording = recorded_aarq("landis_gyr_e450_hls_gmac.json")
    assert main(["decode", hls.hex()]) == 0
    out, _ = capsys.readouterr()
    challenge = hls_recording.header.session["hls_challenge"].upper()
    assert f"authentication_value: {challenge}" in out and "masked" not in out  # a challenge is no secret


def test_decode_help_tells_about_masked_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["decode", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--show-secrets" in help_text and "<masked>" in help_text and "LLS password" in help_text


def test_decode_masks_a_dedicated_key_in_a_plain_initiate_request(capsys: pytest.CaptureFixture[str]) -> None:
    aarq, _ = recorded_aarq("kamstrup_omnipower_none.json")
    key = bytes.fromhex("000102030405060708090A0B0C0D0E0F")  # Green Book test key
    # The recorded xDLMS-InitiateRequest (01 00 00 00 06 ...) given the optional dedicated-key: 01 01 10 <key> 00 00
    plain = bytes.fromhex("be10040e01000000065f1f040000521d0400")
    with_key = bytes.fromhex("be21041f010110") + key + bytes.fromhex("0000065f1f040000521d0400")
    assert aarq.endswith(plain) and aarq[1] == len(aarq) - 2
    body = aarq[2:-len(plain)] + with_key
    assert main(["decode", (bytes([0x60, len(body)]) + body).hex()]) == 0
    out, _ = capsys.readouterr()
    assert "'dedicated_key': '<masked>'" in out
    assert not any(form in out for form in secret_forms(key))


@pytest.mark.parametrize("typed", [DUMMY_KEY.upper(), "00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF"])
def test_a_key_typed_after_env_is_not_echoed(typed: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", VECTORS.frame(4).data.hex(), "--key", f"env:{typed}"]) == 1
    out, err = capsys.readouterr()
    assert "--key: env: must be followed by the name of an environment variable" in err
    assert typed.lower() not in (out + err).lower() and DUMMY_KEY not in (out + err).lower()
