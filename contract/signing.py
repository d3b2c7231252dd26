"""Ed25519 signing and verification of commands and configurations (docs/architecture.md, "Signed
command").

`sig` is the Ed25519 signature of the canonical JSON of every other field, base64url without
padding; public keys are their 32 raw bytes written the same way. Verification is pure: the
caller passes the current time (epoch ms) and its trusted keys, and gets back None or the reason
code of the first failing check. Replay (a cmd_id already executed, a config version not newer
than the applied one) is the caller's check: it needs state this module does not keep.

`cryptography` is imported on the first key operation, not with this module: it costs a locker
about 7 MB of memory, and a locker without a fleet link or trusted keys never signs nor verifies.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from contract.messages import (
    MalformedPayload,
    Message,
    Reason,
    SignedCommand,
    SignedConfig,
    decode_json_object,
    deflate_body,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

DEFAULT_TTL_MS = 30_000
DEFAULT_SKEW_MS = 5_000
#: A configuration body larger than this as canonical JSON is sent compressed (`body_z`): a
#: storage profile is far below it, so lockers of every age keep reading theirs as JSON.
COMPRESS_ABOVE = 48 * 1024
SIGNATURE_LEN = 64
PUBLIC_KEY_LEN = 32

_B64URL_RE = re.compile(r"^[A-Za-z0-9_-]*$")

TrustedKeys = Mapping[str, "str | Ed25519PublicKey"]


class KeyFormatError(ValueError):
    """A key that cannot be used; str() says why."""


# -- encodings --------------------------------------------------------------------------------
def canonical_json(obj: Mapping[str, Any]) -> bytes:
    """The bytes that are signed: sorted keys, no spaces, UTF-8 (not ASCII escapes)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def b64url_encode(data: bytes) -> str:
    """base64url without padding (RFC 7515, appendix C)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Strict inverse of b64url_encode: no padding, no other alphabet, canonical trailing bits."""
    if not isinstance(text, str) or not _B64URL_RE.match(text) or len(text) % 4 == 1:
        raise ValueError("not base64url without padding")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url without padding") from None
    if b64url_encode(data) != text:
        raise ValueError("non-canonical base64url (stray trailing bits)")
    return data


def config_hash(body: Mapping[str, Any]) -> str:
    """The `hash` of config/applied: SHA-256 hex of the canonical JSON of the config body."""
    return hashlib.sha256(canonical_json(body)).hexdigest()


# -- keys -------------------------------------------------------------------------------------
def generate_private_key() -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate()


def private_key_from_seed(seed: bytes) -> Ed25519PrivateKey:
    """A key from its 32-byte seed (for fixed test vectors)."""
    if len(seed) != 32:
        raise KeyFormatError(f"an Ed25519 seed is 32 bytes, got {len(seed)}")
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.from_private_bytes(seed)


def private_key_to_pem(key: Ed25519PrivateKey) -> bytes:
    """PEM, PKCS#8, unencrypted: protect the file by its mode (0600), as ssh does."""
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_private_key_pem(data: bytes) -> Ed25519PrivateKey:
    """Read an unencrypted PKCS#8 PEM Ed25519 private key; KeyFormatError otherwise."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise KeyFormatError("the private key is encrypted; use an unencrypted key") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise KeyFormatError(f"not a PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFormatError(f"not an Ed25519 key but {type(key).__name__}")
    return key


def load_private_key_file(path: str | Path) -> Ed25519PrivateKey:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFormatError(f"{path}: cannot read private key: {exc.strerror}") from None
    try:
        return load_private_key_pem(data)
    except KeyFormatError as exc:
        raise KeyFormatError(f"{path}: {exc}") from None


def public_key_b64(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The 32 raw public-key bytes, base64url without padding (what lockers trust)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return b64url_encode(
        pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )


def load_public_key_b64(text: str) -> Ed25519PublicKey:
    """Inverse of public_key_b64; KeyFormatError if it is not 32 bytes of base64url."""
    try:
        raw = b64url_decode(text)
    except ValueError as exc:
        raise KeyFormatError(f"public key: {exc}") from None
    if len(raw) != PUBLIC_KEY_LEN:
        raise KeyFormatError(f"public key: expected {PUBLIC_KEY_LEN} bytes, got {len(raw)}")
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    return Ed25519PublicKey.from_public_bytes(raw)


# -- signing ----------------------------------------------------------------------------------
def sign(fields: Mapping[str, Any], private_key: Ed25519PrivateKey) -> dict[str, Any]:
    """A copy of `fields` with `sig` over the canonical JSON of all of them (an old sig dropped)."""
    unsigned = {k: v for k, v in fields.items() if k != "sig"}
    return {**unsigned, "sig": b64url_encode(private_key.sign(canonical_json(unsigned)))}


def make_command(
    locker: str,
    type: str,
    args: Mapping[str, Any],
    *,
    operator: str,
    reason: str,
    key_id: str,
    private_key: Ed25519PrivateKey,
    now_ms: int,
    ttl_ms: int = DEFAULT_TTL_MS,
    cmd_id: str | None = None,
) -> dict[str, Any]:
    """A signed command dict, checked against SignedCommand (ValueError on bad input)."""
    fields = {
        "v": 1,
        "cmd_id": cmd_id or str(uuid.uuid4()),
        "locker": locker,
        "type": type,
        "args": dict(args),
        "issued_at": now_ms,
        "expires_at": now_ms + ttl_ms,
        "operator": operator,
        "reason": reason,
        "key_id": key_id,
    }
    return _checked(SignedCommand, sign(fields, private_key))


def make_config(
    locker: str,
    version: int,
    body: Mapping[str, Any],
    *,
    key_id: str,
    private_key: Ed25519PrivateKey,
    now_ms: int,
    compress: bool | None = None,
) -> dict[str, Any]:
    """A signed configuration dict, checked against SignedConfig (ValueError on bad input).

    A body whose canonical JSON is over COMPRESS_ABOVE bytes travels compressed (`body_z`;
    `compress` forces either way): lockers before that extension read every body that fits
    in one packet as JSON."""
    canonical = canonical_json(body)
    if compress is None:
        compress = len(canonical) > COMPRESS_ABOVE
    fields: dict[str, Any] = {
        "v": 1,
        "locker": locker,
        "version": version,
        "issued_at": now_ms,
        "key_id": key_id,
    }
    if compress:
        fields["body_z"] = deflate_body(canonical)
    else:
        fields["body"] = dict(body)
    return _checked(SignedConfig, sign(fields, private_key))


def _checked(model: type[Message], signed: dict[str, Any]) -> dict[str, Any]:
    try:
        model.from_dict(signed)
    except MalformedPayload as exc:
        raise ValueError(f"cannot build a valid {model.__name__}: {exc}") from None
    return signed


# -- verification -----------------------------------------------------------------------------
def _resolve_key(trusted_keys: TrustedKeys, key_id: str) -> Ed25519PublicKey | None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    key = trusted_keys.get(key_id)
    if isinstance(key, Ed25519PublicKey):
        return key
    if isinstance(key, str):
        try:
            return load_public_key_b64(key)
        except KeyFormatError:
            return None  # an unusable trusted key trusts nothing; config loading should say so
    return None


#: The two signed message types: both carry `locker`, `key_id` and `sig`.
_Signed = TypeVar("_Signed", SignedCommand, SignedConfig)


def _check_signed(
    model: type[_Signed],
    payload: Mapping[str, Any] | bytes | bytearray | str,
    trusted_keys: TrustedKeys,
    locker_id: str,
    topic_locker: str | None,
) -> Reason | _Signed:
    """Checks of commands and configs: malformed, unknown_key, bad_signature, wrong_locker.

    The parsed message if every check passes, else the reason code of the first that fails."""
    try:
        raw = dict(payload) if isinstance(payload, Mapping) else decode_json_object(payload)
        parsed = model.from_dict(raw)
        sig = b64url_decode(raw["sig"])
        signed_bytes = canonical_json({k: v for k, v in raw.items() if k != "sig"})
    except (MalformedPayload, ValueError, TypeError, RecursionError):
        # UnicodeEncodeError (lone surrogates from \ud800 escapes) is a ValueError.
        return Reason.MALFORMED
    if len(sig) != SIGNATURE_LEN:
        return Reason.MALFORMED
    key = _resolve_key(trusted_keys, parsed.key_id)
    if key is None:
        return Reason.UNKNOWN_KEY
    from cryptography.exceptions import InvalidSignature

    try:
        key.verify(sig, signed_bytes)
    except InvalidSignature:
        return Reason.BAD_SIGNATURE
    if parsed.locker != locker_id or (topic_locker is not None and parsed.locker != topic_locker):
        return Reason.WRONG_LOCKER
    return parsed


def verify(
    payload: Mapping[str, Any] | bytes | bytearray | str,
    *,
    trusted_keys: TrustedKeys,
    locker_id: str,
    now_ms: int,
    topic_locker: str | None = None,
    skew_ms: int = DEFAULT_SKEW_MS,
    max_ttl_ms: int | None = None,
) -> str | None:
    """None if the command may be executed, else the reason code of the first failing check.

    Order: malformed, unknown_key, bad_signature, wrong_locker (payload locker is not
    `locker_id`, or not `topic_locker` when given), expired (now > expires_at + skew),
    not_yet_valid (issued_at > now + skew), ttl_too_long (expires_at - issued_at > max_ttl_ms,
    when given: a receiver must remember a command until it expires, so it bounds that time;
    the signed window, not the time left, is checked, so a long-lived command stays refused
    for its whole life). Whether cmd_id was already executed (`replayed`) is for the caller
    to check afterwards, against its replay cache.
    """
    cmd = _check_signed(SignedCommand, payload, trusted_keys, locker_id, topic_locker)
    if isinstance(cmd, Reason):
        return cmd
    if now_ms > cmd.expires_at + skew_ms:
        return Reason.EXPIRED
    if cmd.issued_at > now_ms + skew_ms:
        return Reason.NOT_YET_VALID
    if max_ttl_ms is not None and cmd.expires_at - cmd.issued_at > max_ttl_ms:
        return Reason.TTL_TOO_LONG
    return None


def verify_config(
    payload: Mapping[str, Any] | bytes | bytearray | str,
    *,
    trusted_keys: TrustedKeys,
    locker_id: str,
    topic_locker: str | None = None,
    now_ms: int | None = None,
    skew_ms: int = DEFAULT_SKEW_MS,
) -> str | None:
    """None if the configuration is authentic and for this locker, else a reason code.

    Same order as `verify`; a config never expires (it is retained for lockers that boot later),
    and `not_yet_valid` is checked only if `now_ms` is given, since a locker without a real-time
    clock may boot with a wrong time and must still get its configuration. Replay protection is
    the caller's: apply only a version newer than the applied one (`stale_version` otherwise).
    """
    cfg = verified_config(payload, trusted_keys=trusted_keys, locker_id=locker_id,
                          topic_locker=topic_locker, now_ms=now_ms, skew_ms=skew_ms)
    return cfg if isinstance(cfg, Reason) else None


def verified_config(
    payload: Mapping[str, Any] | bytes | bytearray | str,
    *,
    trusted_keys: TrustedKeys,
    locker_id: str,
    topic_locker: str | None = None,
    now_ms: int | None = None,
    skew_ms: int = DEFAULT_SKEW_MS,
) -> SignedConfig | Reason:
    """`verify_config`'s checks, and the parsed configuration when they pass: a large body
    (`body_z`, thousands of recipients) is then decoded and inflated once, not twice."""
    cfg = _check_signed(SignedConfig, payload, trusted_keys, locker_id, topic_locker)
    if isinstance(cfg, Reason):
        return cfg
    if now_ms is not None and cfg.issued_at > now_ms + skew_ms:
        return Reason.NOT_YET_VALID
    return cfg
