"""Salted, slow hashes of staff PINs (couriers, operators, collectors, administrators).

A PIN is 4-8 digits: a fast hash of it is reversed in milliseconds. scrypt (hashlib, no extra
dependency) with a per-PIN salt makes each guess cost ~16 MiB of memory and tens of ms, and the
parameters travel inside the encoded string (`scrypt$n$r$p$salt$hash`, base64url without
padding), so a later console can raise them while older hashes keep verifying. Only these
strings leave the console; the locker verifies against them and never sees a PIN stored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

#: scrypt cost: N=2^14, r=8 needs 16 MiB and ~50 ms here: too slow to walk 10^8 PINs per
#: hash, quick enough for a kiosk login.
DEFAULT_N, DEFAULT_R, DEFAULT_P = 2**14, 8, 1
SALT_BYTES = 16
HASH_BYTES = 32
PIN_PATTERN = r"^[0-9]{4,8}$"
#: What a valid encoded hash looks like (the parcels section checks it).
PIN_HASH_PATTERN = (
    r"^scrypt\$[0-9]{1,8}\$[0-9]{1,3}\$[0-9]{1,3}\$[A-Za-z0-9_-]{16,64}\$[A-Za-z0-9_-]{32,128}$"
)

_PIN_RE = re.compile(PIN_PATTERN)
_HASH_RE = re.compile(PIN_HASH_PATTERN)
#: Refuse parameters a hostile configuration could use to exhaust the locker's memory or CPU.
_MAX_N, _MAX_R, _MAX_P = 2**17, 16, 4


class PinHashError(ValueError):
    """A PIN or an encoded hash that is not acceptable; the message says why."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def check_pin(pin: str) -> str:
    """The PIN if it is 4 to 8 digits; PinHashError otherwise."""
    if not _PIN_RE.match(pin):
        raise PinHashError("a PIN is 4 to 8 digits")
    return pin


def hash_pin(pin: str, *, n: int = DEFAULT_N, r: int = DEFAULT_R, p: int = DEFAULT_P) -> str:
    """The encoded scrypt hash of a PIN, with a fresh random salt."""
    check_pin(pin)
    salt = secrets.token_bytes(SALT_BYTES)
    digest = hashlib.scrypt(pin.encode(), salt=salt, n=n, r=r, p=p, maxmem=256 * n * r + 2**20,
                            dklen=HASH_BYTES)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def check_pin_hash(encoded: str) -> str:
    """The encoded hash if well formed and within the locker's limits; PinHashError otherwise."""
    if not _HASH_RE.match(encoded):
        raise PinHashError("not an encoded PIN hash (scrypt$n$r$p$salt$hash)")
    _, n, r, p, _, _ = encoded.split("$")
    n_, r_, p_ = int(n), int(r), int(p)
    if n_ < 2 or n_ & (n_ - 1) or n_ > _MAX_N or not 1 <= r_ <= _MAX_R or not 1 <= p_ <= _MAX_P:
        raise PinHashError(f"scrypt parameters out of range (n a power of 2 <= {_MAX_N}, "
                           f"r <= {_MAX_R}, p <= {_MAX_P})")
    return encoded


def verify_pin(pin: str, encoded: str) -> bool:
    """True if `pin` matches; compared in constant time. A malformed hash never matches."""
    try:
        check_pin_hash(encoded)
    except PinHashError:
        return False
    if not _PIN_RE.match(pin):
        return False
    _, n, r, p, salt, digest = encoded.split("$")
    want = _unb64(digest)
    got = hashlib.scrypt(pin.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p),
                         maxmem=256 * int(n) * int(r) + 2**20, dklen=len(want))
    return hmac.compare_digest(got, want)
