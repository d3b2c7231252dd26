"""The kiosk's client gate (daemon/kiosk_limits.py): its cap and its summary lines."""

from __future__ import annotations

import io
import json

from daemon.journal import Journal
from daemon.kiosk_limits import RESERVED_FDS, ClientGate, kiosk_connection_cap


def _gate(cap: int = 2) -> tuple[ClientGate, io.StringIO, list[float]]:
    out, now = io.StringIO(), [100.0]
    gate = ClientGate(cap, 5.0, Journal("L1", stream=out), clock=lambda: now[0], report_s=60)
    return gate, out, now


def _lines(out: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_connections_beyond_the_cap_are_refused_until_one_closes() -> None:
    gate, _, _ = _gate(cap=2)
    assert [gate.admit() for _ in range(4)] == [True, True, False, False]
    gate.release()
    assert gate.admit() and not gate.admit()


def test_ten_thousand_refusals_make_one_line_a_minute() -> None:
    gate, out, now = _gate(cap=0)
    for _ in range(10_000):
        gate.admit()
        gate.refused("header_timeout")
        now[0] += 0.001  # ten seconds in all
    assert [r["kind"] for r in _lines(out)] == ["kiosk_clients_refused"]  # the first, at once
    now[0] += 60
    gate.refused("body_too_large")
    lines = _lines(out)
    assert len(lines) == 2
    assert (lines[1]["over_cap"], lines[1]["header_timeout"], lines[1]["body_too_large"]) == (
        9_999, 10_000, 1)
    gate.report()  # nothing new: no line
    assert len(_lines(out)) == 2


def test_the_cap_leaves_descriptors_to_the_rest() -> None:
    assert kiosk_connection_cap(64, 1024) == 64
    assert kiosk_connection_cap(64, 300) == (300 - RESERVED_FDS) // 2
    assert kiosk_connection_cap(64, 100) == 1
