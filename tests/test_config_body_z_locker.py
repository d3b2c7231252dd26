"""lockerd applies a configuration whose body came compressed (`body_z`), as it applies one in
JSON: same checks, same `config/applied` hash (of the inflated body), through a real Mosquitto."""

from __future__ import annotations

import json
import tomllib

from contract.signing import config_hash, make_config
from contract.topics import Topics
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
        assert rig.daemon.store.meta("fleet_config")["body"] == body
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
