"""The signed configuration body in sections (`locker`, `storage`, `parcels`): a locker applies
a body in sections and one in the form before them (a bare profile), through a real Mosquitto."""

from __future__ import annotations

import json

import pytest

from contract.profiles import ConfigBody, ProfileError, is_sectioned, sectioned
from daemon.applied_config import applied_body
from tests.fixtures.storage_locker import profile_toml
from tests.test_fleet_console_e2e import console_setup  # noqa: F401 (fixture)
from tests.test_profiles import body
from tests.test_storage_fleet import _console, _locker


def test_a_bare_profile_is_the_storage_section() -> None:
    flat = body()
    assert not is_sectioned(flat) and is_sectioned(sectioned(flat))
    assert ConfigBody.from_body(flat) == ConfigBody.from_body({"storage": flat})
    assert ConfigBody.from_body({"storage": flat, "locker": {}, "parcels": {}}).storage
    with pytest.raises(ProfileError, match="stock"):
        ConfigBody.from_body({"storage": flat, "stock": {}})


async def test_a_locker_applies_a_body_in_sections_and_one_in_todays_form(
    storage_locker, mqtt_broker, console_setup, tmp_path  # noqa: F811
) -> None:
    key, config, _ = console_setup
    locker, rig = await _locker(storage_locker, mqtt_broker, key)
    v2 = tmp_path / "v2.toml"
    v2.write_text(profile_toml(mode="prepaid", version=2).replace("price = 10000",
                                                                  "price = 20000"))
    out = await _console(config, "publish-config", "--locker", locker, str(v2),
                         "--form", "sections", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout.splitlines()[-1])["version"] == 2
    assert is_sectioned(applied_body(rig.daemon.store.meta("fleet_config")))
    offers = (await rig.http.get("/api/v1/offers")).json()
    assert offers["profile"]["version"] == 2
    v3 = tmp_path / "v3.toml"
    v3.write_text(profile_toml(mode="prepaid", version=3))
    out = await _console(config, "publish-config", "--locker", locker, str(v3))  # flat: auto
    assert out.returncode == 0, out.stdout + out.stderr
    assert not is_sectioned(applied_body(rig.daemon.store.meta("fleet_config")))
    assert (await rig.http.get("/api/v1/offers")).json()["profile"]["version"] == 3
