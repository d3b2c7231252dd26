"""paho's MQTT 5 property tables, built once per process instead of once per packet.

paho's `Properties.__init__` builds three lookup tables (the 7 type names, the 27 property names,
the 27 property ids with their types and packets) for every `Properties` object, and paho makes
one for every MQTT 5 PUBLISH it receives or sends and every PUBACK it receives; `clear()`, called
on every decode, then walks the 27 names. Profiled in `bench/fleet_scale.py` at 3,000 lockers,
that was 15 % of the ingest's CPU in steady state and 38 % while a connect storm's retained state
arrived: more than storing it. The tables are constants (paho never changes them after
construction), so `share()` makes every `Properties` refer to one read-only copy, and `clear()`
look only at the attributes the object has.

This reaches into a library's internals, so it checks first that paho builds exactly the
attributes it knows (paho 2.x) and leaves paho alone otherwise; `tests/test_paho_tables.py`
holds the behaviour that must not change (packing, unpacking, validation).
"""

from __future__ import annotations

import types as _types
from typing import Any

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

#: The per-object attributes paho's own `Properties.__init__` sets; anything else: not patched.
_TABLES = ("types", "names", "properties")
_OWN = frozenset(("packetType", *_TABLES))

_shared = False


def share() -> bool:
    """Install the shared tables (idempotent); False when this paho is not the one known."""
    global _shared
    if _shared:
        return True
    template = Properties(PacketTypes.PUBLISH)
    if set(vars(template)) != _OWN:
        return False
    names = _types.MappingProxyType(dict(template.names))
    tables = {
        "types": tuple(template.types),
        "names": names,
        "properties": _types.MappingProxyType(dict(template.properties)),
    }
    setter = object.__setattr__

    def __init__(self: Properties, packetType: int) -> None:
        setter(self, "packetType", packetType)
        setter(self, "types", tables["types"])
        setter(self, "names", tables["names"])
        setter(self, "properties", tables["properties"])

    def clear(self: Properties) -> None:
        # Every other attribute was set through paho's validating __setattr__: a property.
        for name in [n for n in vars(self) if n not in _OWN]:
            delattr(self, name)

    patched: Any = Properties
    patched.__init__ = __init__
    patched.clear = clear
    _shared = True
    return True
