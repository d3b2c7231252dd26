"""Mosquitto 2.0 password hashes, made in Python so no `mosquitto_passwd` run is needed.

Format of one hash (as `mosquitto_passwd` writes it):
``$7$<iterations>$<base64 salt>$<base64 PBKDF2-SHA512(password, salt, iterations, 64 bytes)>``
with standard base64 (with padding), a 12-byte salt and 101 iterations by default. The low count is
Mosquitto's own default; it is safe here because every password is a 256-bit random token, so
brute force is hopeless however cheap one guess is, and a cheap hash keeps CONNECT fast.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

ALGORITHM_ID = "7"
DEFAULT_ITERATIONS = 101
SALT_BYTES = 12
HASH_BYTES = 64


def new_password() -> str:
    """A fresh random password (256 bits, URL-safe so it pastes into TOML and shells as is)."""
    return secrets.token_urlsafe(32)


def hash_password(
    password: str, *, iterations: int = DEFAULT_ITERATIONS, salt: bytes | None = None
) -> str:
    """The Mosquitto `$7$` hash of `password`; a fresh salt unless one is given (for tests)."""
    if iterations < 1:
        raise ValueError("iterations must be at least 1")
    if salt is None:
        salt = secrets.token_bytes(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations, HASH_BYTES)
    return "${}${}${}${}".format(
        ALGORITHM_ID,
        iterations,
        base64.b64encode(salt).decode("ascii"),
        base64.b64encode(digest).decode("ascii"),
    )


def parse_hash(encoded: str) -> tuple[int, bytes, bytes]:
    """Split a `$7$` hash into (iterations, salt, digest); ValueError says what is wrong."""
    parts = encoded.split("$")
    if len(parts) != 5 or parts[0] != "" or parts[1] != ALGORITHM_ID:
        raise ValueError("not a Mosquitto $7$ (PBKDF2-SHA512) password hash")
    try:
        iterations = int(parts[2])
        salt = base64.b64decode(parts[3], validate=True)
        digest = base64.b64decode(parts[4], validate=True)
    except (ValueError, binascii.Error) as exc:
        raise ValueError(f"malformed $7$ password hash: {exc}") from exc
    if iterations < 1 or not salt or len(digest) != HASH_BYTES:
        raise ValueError("malformed $7$ password hash: bad iterations, salt or digest length")
    return iterations, salt, digest


def verify_password(password: str, encoded: str) -> bool:
    """True when `password` matches the `$7$` hash; a malformed hash never matches."""
    try:
        iterations, salt, digest = parse_hash(encoded)
    except ValueError:
        return False
    candidate = hashlib.pbkdf2_hmac(
        "sha512", password.encode("utf-8"), salt, iterations, len(digest)
    )
    return hmac.compare_digest(candidate, digest)
