"""Signed commands and configurations: what verifies, what does not, and why."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given
from hypothesis import strategies as st

from contract.messages import Reason, SignedCommand, SignedConfig
from contract.signing import (
    KeyFormatError,
    b64url_decode,
    b64url_encode,
    canonical_json,
    config_hash,
    generate_private_key,
    load_private_key_file,
    load_private_key_pem,
    load_public_key_b64,
    make_command,
    make_config,
    private_key_from_seed,
    private_key_to_pem,
    public_key_b64,
    sign,
    verify,
    verify_config,
)

KEY = private_key_from_seed(b"\x01" * 32)
PUB = public_key_b64(KEY)
TRUSTED = {"console-1": PUB}
NOW = 1_767_225_600_000
CMD_ID = "5d0a7f3e-8c1b-4f2a-9e6d-3b7c1a2f4e5d"


def command(**overrides: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "operator": "alice",
        "reason": "customer on the phone",
        "key_id": "console-1",
        "private_key": KEY,
        "now_ms": NOW,
        "cmd_id": CMD_ID,
    }
    kwargs.update(overrides)
    return make_command("L1", "open", {"cell": 3}, **kwargs)


def check(payload: Any, **overrides: Any) -> str | None:
    kwargs: dict[str, Any] = {"trusted_keys": TRUSTED, "locker_id": "L1", "now_ms": NOW + 1_000}
    kwargs.update(overrides)
    return verify(payload, **kwargs)


# -- known answer -----------------------------------------------------------------------------
def test_known_answer_vector() -> None:
    """Fixed key, fixed fields: exact public key, canonical bytes and signature (Ed25519 is
    deterministic), so another implementation can check itself against these."""
    cmd = make_command(
        "L1",
        "open",
        {"cell": 3},
        operator="alice",
        reason="ячейка 3",
        key_id="console-1",
        private_key=KEY,
        now_ms=NOW,
        cmd_id=CMD_ID,
    )
    assert PUB == "iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w"
    unsigned = {k: v for k, v in cmd.items() if k != "sig"}
    assert (
        canonical_json(unsigned)
        == (
            '{"args":{"cell":3},"cmd_id":"5d0a7f3e-8c1b-4f2a-9e6d-3b7c1a2f4e5d",'
            '"expires_at":1767225630000,"issued_at":1767225600000,"key_id":"console-1",'
            '"locker":"L1","operator":"alice","reason":"ячейка 3","type":"open","v":1}'
        ).encode()
    )
    assert cmd["sig"] == (
        "fH5LOCtCEaNwJpF0sGyFd-h3Xz32AzS-Q8u9gw5-cCymJuB5AJ7ntlADmTemNkDjc5gl-WZ5zQ69HfK0Dfw_Dw"
    )
    sig = b64url_decode(cmd["sig"])
    assert len(sig) == 64
    load_public_key_b64(PUB).verify(sig, canonical_json(unsigned))
    assert cmd["sig"] == sign(unsigned, KEY)["sig"]  # deterministic
    assert check(cmd) is None


def test_asyncapi_example_signature_is_reproducible() -> None:
    cmd = make_command(
        "L1",
        "open",
        {"cell": 3},
        operator="alice",
        reason="customer on the phone",
        key_id="console-1",
        private_key=KEY,
        now_ms=NOW,
        cmd_id=CMD_ID,
    )
    assert cmd["sig"] == (
        "Lm2eB63f2fKAXNcTTj7jiRt9wp2yQRPNd3h0Jj_p7gYMTgxsopdAQx62JRrvT9JeLHIZHOMfHj_F5fJ_YtiCDg"
    )


# -- valid and invalid commands ---------------------------------------------------------------
def test_valid_command_verifies_as_dict_bytes_and_str() -> None:
    cmd = command()
    assert check(cmd) is None
    assert check(json.dumps(cmd).encode()) is None
    assert check(json.dumps(cmd, indent=2, ensure_ascii=True)) is None  # layout does not matter
    assert check(SignedCommand.from_dict(cmd).to_payload(), topic_locker="L1") is None
    assert check(cmd, trusted_keys={"console-1": load_public_key_b64(PUB)}) is None


def test_make_command_defaults() -> None:
    cmd = make_command(
        "L1",
        "block",
        {"cell": 1},
        operator="o",
        reason="r",
        key_id="console-1",
        private_key=KEY,
        now_ms=NOW,
    )
    assert cmd["expires_at"] - cmd["issued_at"] == 30_000
    assert cmd["v"] == 1
    assert SignedCommand.from_dict(cmd).cmd_id == cmd["cmd_id"]
    other = make_command(
        "L1",
        "block",
        {"cell": 1},
        operator="o",
        reason="r",
        key_id="console-1",
        private_key=KEY,
        now_ms=NOW,
    )
    assert other["cmd_id"] != cmd["cmd_id"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("args", {"cell": 4}),
        ("locker", "L2"),
        ("expires_at", NOW + 3_600_000),
        ("type", "unblock"),
        ("issued_at", NOW - 1),
        ("operator", "mallory"),
        ("cmd_id", "00000000-0000-4000-8000-000000000000"),
    ],
)
def test_tampered_field_is_bad_signature(field: str, value: Any) -> None:
    cmd = command()
    cmd[field] = value
    assert check(cmd, locker_id=cmd["locker"]) == Reason.BAD_SIGNATURE


def test_signature_by_another_key_is_bad_signature() -> None:
    assert check(command(private_key=generate_private_key())) == Reason.BAD_SIGNATURE


def test_unknown_key() -> None:
    assert check(command(key_id="console-9")) == Reason.UNKNOWN_KEY
    assert check(command(), trusted_keys={}) == Reason.UNKNOWN_KEY
    assert check(command(), trusted_keys={"console-1": "garbage!"}) == Reason.UNKNOWN_KEY


def test_wrong_locker() -> None:
    assert check(command(), locker_id="L2") == Reason.WRONG_LOCKER


def test_topic_locker_mismatch() -> None:
    assert check(command(), topic_locker="L2") == Reason.WRONG_LOCKER
    assert check(command(), topic_locker="L1") is None


def test_expiry_with_skew() -> None:
    cmd = command()
    expires = cmd["expires_at"]
    assert check(cmd, now_ms=expires) is None
    assert check(cmd, now_ms=expires + 5_000) is None
    assert check(cmd, now_ms=expires + 5_001) == Reason.EXPIRED
    assert check(cmd, now_ms=expires + 1, skew_ms=0) == Reason.EXPIRED


def test_issued_in_the_future_is_not_yet_valid() -> None:
    cmd = command()
    assert check(cmd, now_ms=NOW - 5_000) is None
    assert check(cmd, now_ms=NOW - 5_001) == Reason.NOT_YET_VALID


def test_checks_come_in_the_documented_order() -> None:
    # Unknown key wins over a bad signature, which wins over wrong locker, then expiry.
    cmd = command(key_id="console-9")
    cmd["args"] = {"cell": 9}
    assert check(cmd, locker_id="L2", now_ms=NOW * 2) == Reason.UNKNOWN_KEY
    cmd = command()
    cmd["args"] = {"cell": 9}
    assert check(cmd, locker_id="L2", now_ms=NOW * 2) == Reason.BAD_SIGNATURE
    assert check(command(), locker_id="L2", now_ms=NOW * 2) == Reason.WRONG_LOCKER


@pytest.mark.parametrize(
    "mutate",
    [
        lambda c: c.update(sig="!!not base64!!"),
        lambda c: c.update(sig=c["sig"][:-2]),
        lambda c: c.update(sig=c["sig"] + "=="),
        lambda c: c.update(sig=c["sig"][:-1] + "B"),  # non-canonical trailing bits
        lambda c: c.update(v=2),
        lambda c: c.update(v=True),
        lambda c: c.pop("expires_at"),
        lambda c: c.update(issued_at="1767225600000"),
        lambda c: c.update(extra="field"),
        lambda c: c.update(reason="\ud800"),  # lone surrogate: cannot be canonical UTF-8
        lambda c: c.pop("sig"),
    ],
)
def test_malformed_commands(mutate: Any) -> None:
    cmd = command()
    mutate(cmd)
    assert check(cmd) == Reason.MALFORMED


@pytest.mark.parametrize(
    "payload", [b"", b"not json", b"[]", b'"str"', b"\xff", b'{"v": 1, "v": 1}', 42, None]
)
def test_garbage_is_malformed_never_an_exception(payload: Any) -> None:
    assert check(payload) == Reason.MALFORMED


def test_lone_surrogate_escape_in_json_bytes_is_malformed() -> None:
    raw = json.dumps(command()).replace('"alice"', '"\\ud800"').encode()
    assert check(raw) == Reason.MALFORMED


# -- canonical form ---------------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=10,
)


@given(st.dictionaries(st.text(max_size=8), json_values, max_size=8), st.randoms())
def test_canonical_form_ignores_key_order(obj: dict[str, Any], rnd: Any) -> None:
    items = list(obj.items())
    rnd.shuffle(items)
    assert canonical_json(dict(items)) == canonical_json(obj)
    assert canonical_json(json.loads(canonical_json(obj))) == canonical_json(obj)


@given(
    st.permutations(
        [
            "v",
            "cmd_id",
            "locker",
            "type",
            "args",
            "issued_at",
            "expires_at",
            "operator",
            "reason",
            "key_id",
            "sig",
        ]
    )
)
def test_signed_command_verifies_in_any_key_order(order: list[str]) -> None:
    cmd = command()
    reordered = {k: cmd[k] for k in order}
    assert check(json.dumps(reordered).encode()) is None


@given(st.binary(max_size=80))
def test_b64url_round_trip(data: bytes) -> None:
    text = b64url_encode(data)
    assert "=" not in text and "+" not in text and "/" not in text
    assert b64url_decode(text) == data


@pytest.mark.parametrize("text", ["a", "ab=", "a+b/", "ab c", "ab\n"])
def test_b64url_decode_is_strict(text: str) -> None:
    with pytest.raises(ValueError):
        b64url_decode(text)


# -- keys -------------------------------------------------------------------------------------
def test_pem_round_trip(tmp_path: Any) -> None:
    key = generate_private_key()
    pem = private_key_to_pem(key)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert public_key_b64(load_private_key_pem(pem)) == public_key_b64(key)
    path = tmp_path / "k.pem"
    path.write_bytes(pem)
    assert public_key_b64(load_private_key_file(path)) == public_key_b64(key)
    assert isinstance(load_public_key_b64(public_key_b64(key)), Ed25519PublicKey)
    assert len(b64url_decode(public_key_b64(key))) == 32


def test_bad_keys_are_refused(tmp_path: Any) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    with pytest.raises(KeyFormatError):
        load_private_key_pem(b"not a key")
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(KeyFormatError, match="Ed25519"):
        load_private_key_pem(ec_pem)
    encrypted = KEY.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    with pytest.raises(KeyFormatError, match="encrypted"):
        load_private_key_pem(encrypted)
    with pytest.raises(KeyFormatError, match="cannot read"):
        load_private_key_file(tmp_path / "missing.pem")
    with pytest.raises(KeyFormatError, match="32 bytes"):
        load_public_key_b64(b64url_encode(b"\x00" * 31))
    with pytest.raises(KeyFormatError, match="32 bytes"):
        private_key_from_seed(b"\x00")


def test_make_command_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="locker"):
        make_command(
            "a/b", "open", {}, operator="o", reason="r", key_id="k", private_key=KEY, now_ms=NOW
        )
    with pytest.raises(ValueError, match="expires_at"):
        command(ttl_ms=-1)


# -- configurations ---------------------------------------------------------------------------
def config(**overrides: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"key_id": "console-1", "private_key": KEY, "now_ms": NOW}
    kwargs.update(overrides)
    return make_config("L1", 7, {"profile": "storage-default", "tariffs": {}}, **kwargs)


def test_config_known_answer_matches_asyncapi_example() -> None:
    cfg = config()
    assert cfg["sig"] == (
        "ZTtYT9lHS0RFbgpA3K6u8g0goZNVBvzFkwi4GLBhqwRWbtAbvpvFJfXN4VZtUBkostJ8tYJaMvHnD0klDensDQ"
    )
    assert config_hash(cfg["body"]) == (
        "9457a10d16954572e766fcfe304dc1b54407d46b6583e9d9f873788ee75206ac"
    )
    assert SignedConfig.from_dict(cfg).version == 7


def test_config_verification() -> None:
    cfg = config()
    ok = {"trusted_keys": TRUSTED, "locker_id": "L1"}
    assert verify_config(cfg, **ok) is None
    assert verify_config(json.dumps(cfg).encode(), **ok, topic_locker="L1") is None
    # No expiry: a retained config read a year later still holds.
    assert verify_config(cfg, **ok, now_ms=NOW + 365 * 86_400_000) is None
    assert verify_config(cfg, **ok, now_ms=NOW - 60_000) == Reason.NOT_YET_VALID
    assert verify_config(cfg, **ok, topic_locker="L2") == Reason.WRONG_LOCKER
    assert verify_config(cfg, trusted_keys=TRUSTED, locker_id="L2") == Reason.WRONG_LOCKER
    assert verify_config(cfg, trusted_keys={}, locker_id="L1") == Reason.UNKNOWN_KEY
    for field, value in [("version", 8), ("body", {"profile": "x"}), ("locker", "L2")]:
        tampered = {**cfg, field: value}
        assert verify_config(tampered, trusted_keys=TRUSTED, locker_id=tampered["locker"]) == (
            Reason.BAD_SIGNATURE
        )
    assert verify_config({**cfg, "version": 0}, **ok) == Reason.MALFORMED
    assert verify_config(b"{", **ok) == Reason.MALFORMED
    # A command is not a config and vice versa.
    assert verify_config(command(), **ok) == Reason.MALFORMED
    assert check(cfg) == Reason.MALFORMED


def test_config_hash_ignores_key_order() -> None:
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})
