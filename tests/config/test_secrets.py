"""Secret references: resolved late, checked for permissions, and never shown in text."""
from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.cli import main
from gateway.config import ConfigError, Secret, SecretRef, SecretUnavailable, parse_config, read_env_file

from .conftest import BASE, HDLC_METER, by_key

VALUE = "s3cr3t-Value-42"
KEY_HEX = "000102030405060708090A0B0C0D0E0F"


def _texts(ref: SecretRef, secret: Secret) -> list[str]:
    return [repr(ref), str(ref), f"{ref}", repr(secret), str(secret), f"{secret}", ref.describe()]


def test_env_secret_resolves_late_and_never_shows(monkeypatch: pytest.MonkeyPatch) -> None:
    ref = SecretRef("env", "GW_TEST_SECRET", "meters[0].security.password")
    with pytest.raises(SecretUnavailable, match="GW_TEST_SECRET.*is not set"):
        ref.resolve()

    monkeypatch.setenv("GW_TEST_SECRET", VALUE)
    secret = ref.resolve()

    assert secret.reveal() == VALUE.encode()
    assert all(VALUE not in text for text in _texts(ref, secret))
    assert "meters[0].security.password" in str(ref)


def test_file_secret_must_be_0600_or_narrower(tmp_path: Path) -> None:
    path = tmp_path / "ak.hex"
    path.write_text(KEY_HEX + "\n")
    ref = SecretRef("file", str(path), "meters[1].security.authentication_key")

    os.chmod(path, 0o644)
    with pytest.raises(SecretUnavailable) as info:
        ref.resolve()
    assert "0644, wider than 0600" in str(info.value) and str(path) in str(info.value)
    assert KEY_HEX not in str(info.value) and KEY_HEX not in repr(info.value)

    for mode in (0o600, 0o400):
        os.chmod(path, mode)
        secret = ref.resolve_key(16)
        assert secret.reveal() == bytes.fromhex(KEY_HEX)
        assert all(KEY_HEX not in text and KEY_HEX.lower() not in text for text in _texts(ref, secret))


def test_file_secret_keeps_inner_bytes_and_drops_the_final_newline(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_bytes(b" pass word \r\n")
    os.chmod(path, 0o600)

    assert SecretRef("file", str(path)).resolve().reveal() == b" pass word "


def test_missing_file_and_directory_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SecretUnavailable, match="does not exist"):
        SecretRef("file", str(tmp_path / "absent")).resolve()
    with pytest.raises(SecretUnavailable, match="not a regular file|cannot be read"):
        SecretRef("file", str(tmp_path)).resolve()


@pytest.mark.parametrize(
    ("value", "reason"),
    [("not-hex-" + "Z" * 24, "is not a hexadecimal key"), ("0011223344556677", "holds a 8-byte key")],
)
def test_bad_key_errors_name_the_reference_not_the_value(value: str, reason: str) -> None:
    ref = SecretRef("env", "GW_TEST_KEY", "store.key")
    with pytest.raises(SecretUnavailable) as info:
        ref.resolve_key(16, environ={"GW_TEST_KEY": value})

    assert reason in str(info.value) and "GW_TEST_KEY" in str(info.value)
    assert value not in str(info.value) and value not in repr(info.value)


def test_empty_env_secret_is_refused() -> None:
    with pytest.raises(SecretUnavailable, match="is empty"):
        SecretRef("env", "GW_EMPTY").resolve({"GW_EMPTY": ""})


def test_loaded_config_never_shows_resolved_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ek").write_text(KEY_HEX)
    os.chmod(tmp_path / "ek", 0o600)
    monkeypatch.setenv("GW_TEST_AK", "D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF")
    security = (
        'security = { level = "hls_gmac", authentication_key = { env = "GW_TEST_AK" }, '
        'encryption_key = { file = "ek" } }'
    )
    config = parse_config(BASE + HDLC_METER.replace('security = { level = "none" }', security), base_dir=tmp_path)
    resolved = [ref.resolve_key(16) for ref in config.secret_refs()]

    assert [s.reveal().hex().upper() for s in resolved] == ["D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF", KEY_HEX]
    shown = repr(config) + str(config) + repr(resolved)
    assert "D0D1D2" not in shown.upper() and "000102" not in shown


# Secrets a careless operator might paste: hex keys, passwords with punctuation (no TOML escapes needed).
inline_secrets = st.text(
    alphabet=st.sampled_from("ABCDEFabcdef0123456789!#$%&()*+,-./:;<=>?@[]^_{|}~"), min_size=8, max_size=40
)


@settings(max_examples=60, deadline=None)
@given(secret=inline_secrets, key=st.sampled_from(["password", "authentication_key", "encryption_key"]))
def test_inline_secret_never_appears_in_the_error(secret: str, key: str) -> None:
    level = "lls" if key == "password" else "hls_gmac"
    security = f'security = {{ level = "{level}", {key} = "{secret}" }}'
    text = BASE + HDLC_METER.replace('security = { level = "none" }', security)
    with pytest.raises(ConfigError) as info:
        parse_config(text, file="fleet.toml")

    assert secret not in str(info.value)
    assert any(i.key_path == f"meters[0].security.{key}" for i in info.value.issues)


def test_env_file_reader(tmp_path: Path) -> None:
    path = tmp_path / "secrets.env"
    path.write_text("# comment\n\nA=1\nexport B = 'two words'\nC=\"x=y\"\n")
    assert read_env_file(path) == {"A": "1", "B": "two words", "C": "x=y"}

    path.write_text("not a line\n")
    with pytest.raises(ValueError, match="secrets.env:1"):
        read_env_file(path)


# Issue 10, item 7: a secret typed where the variable name or the file path belongs.

@pytest.mark.parametrize("value", [
    "D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF",  # an AES key in hex that happens to be a valid variable name
    "DEADBEEFCAFEBABE",  # an 8-byte LLS password in hex
    "ABCDEF0123456789abcdef0123456789ABCDEF01",
])
def test_secret_typed_as_env_name_is_refused_naming_the_key(
        value: str, write_config: Callable[[str], Path], capsys: pytest.CaptureFixture[str]) -> None:
    security = f'security = {{ level = "lls", password = {{ env = "{value}" }} }}'
    path = write_config(BASE + HDLC_METER.replace('security = { level = "none" }', security))

    assert main(["check-config", str(path)]) == 1
    out, err = capsys.readouterr()
    assert "meters[0].security.password.env" in err and "looks like a key or password" in err
    assert value.upper() not in (out + err).upper()


# Secrets typed where a file path belongs (no "/", no TOML escapes). Hex keys, padded base64 keys and
# passwords with punctuation are refused as they are; a plain word only by the file check (no such file).
_PUNCTUATION = "!#$%&()*:;<=>?[]^{|}"
looks_secret = st.one_of(
    st.binary(min_size=8, max_size=32).map(lambda raw: raw.hex()),
    st.binary(min_size=16, max_size=16).map(lambda raw: base64.b64encode(raw).decode().replace("/", "_")),
    st.tuples(st.text(alphabet=st.sampled_from("ABCDEFabcdef0123456789-._@" + _PUNCTUATION), min_size=7, max_size=39),
              st.sampled_from(_PUNCTUATION)).map("".join),
)
plain_word = st.text(alphabet=st.sampled_from("ABCDEFGHabcdefgh0123456789-._"), min_size=8, max_size=40)


@settings(max_examples=80, deadline=None)
@given(case=st.one_of(st.tuples(looks_secret, st.booleans()), st.tuples(plain_word, st.just(True))))
def test_secret_typed_as_file_path_never_appears_in_the_error(
        case: tuple[str, bool], tmp_path_factory: pytest.TempPathFactory) -> None:
    secret, check_files = case
    security = f'security = {{ level = "lls", password = {{ file = "{secret}" }} }}'
    text = BASE + HDLC_METER.replace('security = { level = "none" }', security)
    with pytest.raises(ConfigError) as info:
        parse_config(text, file="fleet.toml", base_dir=tmp_path_factory.mktemp("fleet"),
                     check_secret_files=check_files)

    assert secret not in str(info.value) and secret not in repr(info.value.issues)
    assert [i.key_path for i in info.value.issues] == ["meters[0].security.password.file"]


def test_missing_secret_file_is_named_when_given_as_a_path_but_not_as_a_bare_name(tmp_path: Path) -> None:
    meters = (HDLC_METER.replace('security = { level = "none" }',
                                 'security = { level = "lls", password = { file = "hunter2-Pa55word" } }')
              + HDLC_METER.replace('"lg-1"', '"lg-2"').replace(
                  'security = { level = "none" }', 'security = { level = "lls", password = { file = "pw/lg-2.pw" } }'))
    with pytest.raises(ConfigError) as info:
        parse_config(BASE + meters, file="fleet.toml", base_dir=tmp_path)
    bare = by_key(list(info.value.issues), "meters[0].security.password.file")
    path = by_key(list(info.value.issues), "meters[1].security.password.file")

    assert "does not exist" in bare.message and str(tmp_path) in bare.message
    assert "hunter2" not in str(info.value)
    assert f"secret file {tmp_path / 'pw' / 'lg-2.pw'} does not exist" in path.message
