"""paho's MQTT 5 properties behave the same with the shared tables (fleet_io/paho_tables.py):
what they pack, what they unpack, what they refuse."""

from __future__ import annotations

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import MQTTException, Properties

from fleet_io import paho_tables


def _publish_props() -> Properties:
    p = Properties(PacketTypes.PUBLISH)
    p.PayloadFormatIndicator = 1
    p.MessageExpiryInterval = 3600
    p.ContentType = "application/json"
    p.ResponseTopic = "lockers/L1/results"
    p.CorrelationData = b"\x00\x01cmd"
    p.UserProperty = ("kind", "ack")
    p.UserProperty = ("v", "2")
    return p


def test_shared_tables_are_installed_and_read_only() -> None:
    assert paho_tables.share()
    a, b = Properties(PacketTypes.PUBLISH), Properties(PacketTypes.CONNECT)
    assert a.names is b.names and a.properties is b.properties
    with pytest.raises(TypeError):
        a.names["Extra"] = 99  # type: ignore[index]


def test_pack_and_unpack_round_trip_every_kind_of_value() -> None:
    paho_tables.share()
    packed = _publish_props().pack()
    back = Properties(PacketTypes.PUBLISH)
    back.unpack(packed)
    assert back.MessageExpiryInterval == 3600
    assert back.ContentType == "application/json"
    assert back.CorrelationData == b"\x00\x01cmd"
    assert back.UserProperty == [("kind", "ack"), ("v", "2")]
    assert back.pack() == packed
    assert back.json()["ResponseTopic"] == "lockers/L1/results"


def test_unpack_clears_what_a_reused_object_held() -> None:
    paho_tables.share()
    props = _publish_props()
    empty = Properties(PacketTypes.PUBLISH).pack()
    props.unpack(empty)
    assert props.isEmpty()
    assert not hasattr(props, "UserProperty")
    assert props.pack() == empty == b"\x00"


def test_validation_still_refuses_what_paho_refuses() -> None:
    paho_tables.share()
    connect = Properties(PacketTypes.CONNECT)
    connect.SessionExpiryInterval = 60
    connect.ReceiveMaximum = 10_000
    with pytest.raises(MQTTException):
        connect.ReceiveMaximum = 0  # out of range
    with pytest.raises(MQTTException):
        connect.ContentType = "text/plain"  # not a CONNECT property
    with pytest.raises(MQTTException):
        connect.NoSuchThing = 1
    assert connect.pack()[0] > 0
