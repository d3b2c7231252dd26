"""lockerd applies a configuration whose body came compressed (`body_z`), as it applies one in
JSON: same checks, same `config/applied` hash (of the inflated body), through a real Mosquitto."""

from __future__ import annotations

import asyncio
import json
import tomllib

from bench.bench_parcel_pickup import section
from contract.signing import config_hash, make_config
from contract.topics import Topics
from daemon.applied_config import applied_body, applied_sections, profile_body
from tests.fixtures.storage_locker import profile_toml
from tests.test_fleet_console_e2e import console_setup  # noqa: F401 (fixture)
from tests.test_storage_fleet import _locker


async def test_a_locker_applies_a_compressed_body_and_refuses_a_forged_one(
    storage_locker, mqtt_broker, console_setup  # noqa: F811
) -> None:
    key, _, _ = console_setup
    locker, rig = await _locker(storage_locker, mqtt_broker, key)
    topics = Topics()
    body = {"storage": tomllib.loads(profile_toml(mode="prepaid", version=2))}
    signed = make_config(locker, 2, body, key_id="console-1", private_key=key, now_ms=1,
                         compress=True)
    assert "body_z" in signed
    with mqtt_broker.console_client() as c:
        c.subscribe(topics.config_applied(locker))
        c.publish(topics.config(locker), json.dumps(signed), retain=True)
        await rig.wait_event("config_applied", version=2, timeout=10)
        # kept as it came (compressed), not parsed: a parcels section is megabytes of dicts
        assert rig.daemon.store.meta("fleet_config")["body_z"] == signed["body_z"]
        assert "body" not in rig.daemon.store.meta("fleet_config")
        assert applied_body(rig.daemon.store.meta("fleet_config")) == body
        assert rig.daemon.store.meta("fleet_config")["hash"] == config_hash(body)
        offers = (await rig.http.get("/api/v1/offers")).json()
        assert offers["profile"]["version"] == 2

        other = make_config(locker, 3, {"storage": {}}, key_id="console-1", private_key=key,
                            now_ms=1, compress=True)
        forged = {**make_config(locker, 3, body, key_id="console-1", private_key=key,
                                now_ms=1, compress=True), "body_z": other["body_z"]}
        c.publish(topics.config(locker), json.dumps(forged), retain=True)
        rejected = await rig.wait_event("config_rejected", timeout=10)
        assert rejected["data"]["reason"] == "bad_signature"
        assert rig.daemon.store.meta("fleet_config")["version"] == 2
        c.publish(topics.config(locker), b"", retain=True)


async def test_a_parcels_section_is_kept_compressed_and_its_redelivery_not_parsed_again(
    storage_locker, mqtt_broker, console_setup, monkeypatch  # noqa: F811
) -> None:
    """Issue 12 follow-up: the store kept the signed body parsed (10,000 recipient dicts, for
    the process's life, beside the packed recipients the parcel business uses), and every
    reconnect (the broker delivers the retained configuration again) parsed it again."""
    import daemon.fleet

    key, _, _ = console_setup
    locker, rig = await _locker(storage_locker, mqtt_broker, key)
    parcels = tomllib.loads(section(200))
    body = {"storage": tomllib.loads(profile_toml(mode="prepaid", version=2)),
            "parcels": parcels}
    payload = json.dumps(make_config(locker, 2, body, key_id="console-1", private_key=key,
                                     now_ms=1, compress=True)).encode()
    parsed: list[bytes] = []
    verify = daemon.fleet.verified_config

    def counted(raw, **kw):  # type: ignore[no-untyped-def]
        parsed.append(raw)
        return verify(raw, **kw)

    monkeypatch.setattr(daemon.fleet, "verified_config", counted)
    topics = Topics()
    with mqtt_broker.console_client() as c:
        c.subscribe(topics.config_applied(locker))
        c.publish(topics.config(locker), payload, retain=True)
        await rig.wait_event("config_applied", version=2, timeout=10)
        applied = rig.daemon.store.meta("fleet_config")
        assert "body" not in applied and applied_body(applied) == body
        assert applied_sections(applied) == {"storage", "parcels"}
        assert profile_body(applied) == {**body, "parcels": None}  # the profile, in the clear
        assert len(parsed) == 1
        await asyncio.to_thread(c.expect, topics.config_applied(locker), 5)
        c.publish(topics.config(locker), payload, retain=True)  # the same bytes again
        again = json.loads((await asyncio.to_thread(
            c.expect, topics.config_applied(locker), 5)).payload)
        assert again == {"version": 2, "hash": config_hash(body)}
        assert len(parsed) == 1  # confirmed without parsing
        c.publish(topics.config(locker), b"", retain=True)


def test_a_store_from_before_keeps_its_body_compressed_from_now_on(tmp_path) -> None:
    """A configuration stored with its body in the clear is read as it was, and the daemon's
    start writes it compressed (`compressed`): same body, same hash, same sections."""
    from daemon.applied_config import compressed

    body = {"storage": tomllib.loads(profile_toml(mode="prepaid", version=2)),
            "parcels": tomllib.loads(section(3))}
    before = {"version": 2, "hash": config_hash(body), "body": body, "issued_at": 1,
              "key_id": "console-1"}
    assert applied_body(before) == body and applied_sections(before) == {"storage", "parcels"}
    after = compressed(before)
    assert after is not None and "body" not in after
    assert applied_body(after) == body and applied_sections(after) == {"storage", "parcels"}
    assert {k: after[k] for k in ("version", "hash", "issued_at", "key_id")} == {
        k: before[k] for k in ("version", "hash", "issued_at", "key_id")}
    assert compressed(after) is None and compressed(None) is None


async def test_lockerd_compresses_the_body_a_store_from_before_kept_parsed(
    storage_locker, tmp_path
) -> None:
    """A store written before keeps the applied body parsed in `fleet_config`: lockerd's start
    writes it compressed, and the profile it gives is in force as before."""
    from daemon.io.store import LockerStore

    body = {"storage": tomllib.loads(profile_toml(mode="prepaid", version=7))}
    old = LockerStore(tmp_path / "data-0")  # the rig's data_dir
    old.commit(meta={"fleet_config": {"version": 7, "hash": config_hash(body), "body": body,
                                      "issued_at": 1, "key_id": "console-1"}}, now_ms=1)
    old.close()
    rig = await storage_locker()
    applied = rig.daemon.store.meta("fleet_config")
    assert "body" not in applied and applied_body(applied) == body
    assert applied["hash"] == config_hash(body)
    assert (await rig.http.get("/api/v1/offers")).json()["profile"]["version"] == 7
