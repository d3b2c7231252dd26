"""The fleet configuration a locker applied, as its store keeps it: the body compressed.

A parcel locker's body carries its `parcels` section: 10,000 recipients (name, department,
e-mail) are 0.9 MB of JSON and, parsed, 4.2 MB of dicts and strings, which the store held for
the process's life (tinydb keeps every document in memory) beside the packed recipients the
parcel business actually uses. So the store keeps the body as `body_z` (zlib of its canonical
JSON, base64url: what `SignedConfig` carries for a large body; 114 KB for those 10,000) and the
names of its sections, and beside them, in the clear, the body without its `parcels` section
(`profile_body`: the storage profile, a few KB), so that reading the profile never inflates the
recipients (doing so at the kiosk's first request left lockerd 5 MB larger); the parcel
business inflates the body once per applied version and keeps only what it builds from it.

The broker delivers the retained configuration again on every (re)connect: the sha256 of the
payload bytes applied (`payload_sha256`) lets the locker confirm a byte-identical re-delivery
without parsing it again (before, each reconnect of a parcel locker parsed the 10,000
recipients again: 6.6 MB more RSS after the first, in `bench/bench_parcel_pickup.py --via-fleet`).

A store written before (`body` in the clear) is read all the same; `compressed` gives its new
form, which the daemon writes at start.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any


def stored_form(version: int, digest: str, body: Mapping[str, Any], issued_at: int,
                key_id: str, body_z: str | None = None,
                payload: bytes | None = None) -> dict[str, Any]:
    """What the store keeps of an applied configuration: no parsed body. `body_z`: the one it
    travelled as, if it did (else the body is compressed here); `payload`: the signed bytes."""
    if body_z is None:
        from contract.messages import deflate_body
        from contract.signing import canonical_json

        body_z = deflate_body(canonical_json(body))
    form = {"version": version, "hash": digest, "body_z": body_z,
            "sections": sorted(body), "profile_body": _without_parcels(body),
            "issued_at": issued_at, "key_id": key_id}
    if payload is not None:
        form["payload_sha256"] = payload_digest(payload)
    return form


def payload_digest(payload: bytes) -> str:
    """The sha256 of a configuration's signed bytes, as it came."""
    return hashlib.sha256(payload).hexdigest()


def is_redelivery(applied: Mapping[str, Any] | None, payload: bytes) -> bool:
    """These bytes are exactly the ones applied (verified then): nothing to check again."""
    return applied is not None and applied.get("payload_sha256") == payload_digest(payload)


def applied_body(applied: Mapping[str, Any]) -> dict[str, Any]:
    """The applied body, inflated (a fresh copy: keep what is built from it, not it)."""
    if "body_z" in applied:
        from contract.messages import inflate_body

        return inflate_body(applied["body_z"])
    body = applied.get("body")
    return dict(body) if isinstance(body, Mapping) else {}


def profile_body(applied: Mapping[str, Any]) -> dict[str, Any]:
    """The applied body with its `parcels` section set to None (a sectioned body) or as it is
    (a bare profile): what `ConfigBody.from_body(...).storage` reads, never inflated."""
    if "profile_body" in applied:
        return dict(applied["profile_body"])
    return _without_parcels(applied_body(applied))


def _without_parcels(body: Mapping[str, Any]) -> dict[str, Any]:
    from contract.profiles import is_sectioned

    return {**body, "parcels": None} if is_sectioned(dict(body)) else dict(body)


def applied_sections(applied: Mapping[str, Any] | None) -> frozenset[str]:
    """The sections (`storage`, `parcels` ...) of the applied body, without inflating it."""
    if not applied:
        return frozenset()
    if "sections" in applied:
        return frozenset(applied["sections"])
    body = applied.get("body")
    return frozenset(body) if isinstance(body, Mapping) else frozenset()


def compressed(applied: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The stored form of a configuration kept with its body in the clear (a store from
    before); None when there is nothing to change."""
    if not applied or "body" not in applied or "body_z" in applied:
        return None
    return stored_form(applied["version"], applied["hash"], applied.get("body") or {},
                       applied.get("issued_at", 0), applied.get("key_id", ""))
