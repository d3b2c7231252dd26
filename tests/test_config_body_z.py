"""A configuration body too large for one packet as JSON travels compressed (`body_z`)."""

from __future__ import annotations

import base64
import zlib

import pytest

from contract.messages import MalformedPayload, SignedConfig
from contract.signing import (
    COMPRESS_ABOVE,
    canonical_json,
    config_hash,
    make_config,
    private_key_from_seed,
    public_key_b64,
    verify_config,
)

KEY = private_key_from_seed(b"\x07" * 32)
TRUST = {"console-1": public_key_b64(KEY)}


def _big_body() -> dict:
    recipients = [{"id": f"r{i}", "name": f"Иванов Иван {i}", "phone": f"+7900{i:07d}"}
                  for i in range(3000)]
    return {"storage": {"version": 3}, "parcels": {"recipients": recipients}}


def test_a_large_body_is_sent_compressed_and_verifies_to_the_same_body_and_hash() -> None:
    body = _big_body()
    assert len(canonical_json(body)) > COMPRESS_ABOVE
    signed = make_config("L1", 4, body, key_id="console-1", private_key=KEY, now_ms=1)
    assert "body" not in signed and len(signed["body_z"]) < len(canonical_json(body)) / 3
    assert verify_config(signed, trusted_keys=TRUST, locker_id="L1") is None
    parsed = SignedConfig.from_dict(signed)
    assert parsed.content == body
    assert config_hash(parsed.content) == config_hash(body)


def test_a_body_that_fits_stays_json_for_older_lockers() -> None:
    body = {"storage": {"version": 3}, "parcels": {}}
    signed = make_config("L1", 4, body, key_id="console-1", private_key=KEY, now_ms=1)
    assert signed["body"] == body and "body_z" not in signed
    assert SignedConfig.from_dict(signed).content == body


def test_a_changed_body_z_fails_the_signature() -> None:
    signed = make_config("L1", 4, _big_body(), key_id="console-1", private_key=KEY, now_ms=1)
    other = make_config("L1", 4, {**_big_body(), "locker": {}}, key_id="console-1",
                        private_key=KEY, now_ms=1)
    forged = {**signed, "body_z": other["body_z"]}
    assert verify_config(forged, trusted_keys=TRUST, locker_id="L1") == "bad_signature"


@pytest.mark.parametrize("body_z", [
    base64.urlsafe_b64encode(zlib.compress(b"x" * (40 * 2**20))).rstrip(b"=").decode(),
    base64.urlsafe_b64encode(zlib.compress(b"[1, 2]")).rstrip(b"=").decode(),
    base64.urlsafe_b64encode(zlib.compress(b'{"a": 1}')[:-3]).rstrip(b"=").decode(),
    "AAAA",
])
def test_a_bomb_a_non_object_or_garbage_is_malformed(body_z: str) -> None:
    raw = {"v": 1, "locker": "L1", "version": 1, "issued_at": 1, "key_id": "console-1",
           "body_z": body_z, "sig": "A" * 86}
    with pytest.raises(MalformedPayload):
        SignedConfig.from_dict(raw)
    assert verify_config(raw, trusted_keys=TRUST, locker_id="L1") == "malformed"


def test_both_or_neither_body_is_malformed() -> None:
    signed = make_config("L1", 4, _big_body(), key_id="console-1", private_key=KEY, now_ms=1)
    with pytest.raises(MalformedPayload):
        SignedConfig.from_dict({**signed, "body": {}})
    with pytest.raises(MalformedPayload):
        SignedConfig.from_dict({k: v for k, v in signed.items() if k != "body_z"})


def test_the_documented_compressed_example_verifies_and_inflates() -> None:
    from tests.test_asyncapi import DOC

    (example,) = [e for e in DOC["components"]["messages"]["SignedConfig"]["examples"]
                  if "body_z" in e["payload"]]
    doc_key = public_key_b64(private_key_from_seed(b"\x01" * 32))
    cfg = example["payload"]
    assert verify_config(cfg, trusted_keys={"console-1": doc_key}, locker_id="L1") is None
    assert SignedConfig.from_dict(cfg).content["parcels"]["recipients"][0]["name"] == "Иванов Иван"
