"""What the locker and the console share lives once (issue 11, item 7): fleet_io.

aiomqtt exposes no manual acknowledgements, so the project reaches into its private paho client;
that reach must stay in the one marked place, where an aiomqtt upgrade is mended in one line.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = ("contract", "fleet_io", "daemon", "fleet_console", "broker", "board_sim")
#: An attribute `_client` of something that is not `self` or `cls` (our own `self._client` is ours).
REACH = re.compile(r"(?<![\w.])(?!self\b|cls\b)\w+(?:\.\w+)*\._client\b")


def test_the_reach_into_paho_is_in_one_place() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{n}"
        for package in PROGRAMS
        for path in sorted((ROOT / package).rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if REACH.search(line.split("#", 1)[0])
    ]
    assert [place.split(":")[0] for place in found] == ["fleet_io/mqtt_client.py"], found
