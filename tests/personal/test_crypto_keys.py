"""AES-GCM field encryption and the SQLite key store, on real key store files."""
from __future__ import annotations

import base64
from dataclasses import replace
from pathlib import Path
from typing import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.personal.crypto import FieldTampered, decrypt_field, encrypt_field, reveal
from gateway.personal.keys import DataKey, KeyStore, SqliteKeyStore

from . import encodings, files_containing


@pytest.fixture
async def keys(tmp_path: Path) -> AsyncIterator[SqliteKeyStore]:
    store = await SqliteKeyStore.open(tmp_path / "gateway.keys.db")
    yield store
    await store.aclose()


@pytest.mark.anyio
async def test_round_trip_and_binding_to_assignment_and_field(keys: SqliteKeyStore) -> None:
    key = await keys.create("a-1")
    assert isinstance(keys, KeyStore)
    sealed = encrypt_field(key, "postal_code", "1234 AB")
    assert "1234" not in sealed.ciphertext and sealed.key_id == key.key_id
    assert await reveal(keys, "postal_code", sealed, "a-1") == "1234 AB"
    # The same ciphertext read as another field, or under another assignment, does not authenticate.
    with pytest.raises(FieldTampered):
        decrypt_field(key, "house_number", sealed)
    with pytest.raises(FieldTampered):
        decrypt_field(replace(key, assignment_id="a-2"), "postal_code", sealed)
    with pytest.raises(FieldTampered):
        await reveal(keys, "postal_code", sealed, "a-2")
    flipped = base64.b64decode(sealed.ciphertext)
    flipped = bytes([flipped[0] ^ 1]) + flipped[1:]
    with pytest.raises(FieldTampered):
        decrypt_field(key, "postal_code", replace(sealed, ciphertext=base64.b64encode(flipped).decode()))
    # Two encryptions of one value differ (fresh nonce each time).
    assert encrypt_field(key, "postal_code", "1234 AB").ciphertext != sealed.ciphertext


@given(text=st.text(max_size=64))
@settings(max_examples=50, deadline=None)
def test_any_text_round_trips(text: str) -> None:
    key = DataKey("k", "a-1", bytes(range(32)))
    assert decrypt_field(key, "house_number", encrypt_field(key, "house_number", text)) == text


@pytest.mark.anyio
async def test_destroyed_key_bytes_are_gone_from_the_key_store_files(tmp_path: Path) -> None:
    keys = await SqliteKeyStore.open(tmp_path / "gateway.keys.db")
    try:
        doomed = await keys.create("doomed")
        kept = [await keys.create(f"kept-{i}") for i in range(20)]
        await keys.aclose()
        # The check can fail: before destruction the bytes are in the file as written.
        assert files_containing(tmp_path, encodings(doomed.material))
        keys = await SqliteKeyStore.open(tmp_path / "gateway.keys.db")
        await keys.destroy("doomed")
        assert files_containing(tmp_path, encodings(doomed.material)) == []
        for key in kept:  # the other keys are untouched
            assert await keys.get(key.key_id) == key
    finally:
        await keys.aclose()
    assert files_containing(tmp_path, encodings(doomed.material)) == []
