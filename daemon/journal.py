"""Structured log lines: one JSON object per line on stderr, one line per transition and alarm.

Technicians grep them and log shippers parse them; keep keys stable.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO


class Journal:
    def __init__(self, locker_id: str, stream: TextIO | None = None) -> None:
        self.locker_id = locker_id
        self.stream = stream or sys.stderr

    def line(self, kind: str, level: str = "info", **fields: Any) -> None:
        record = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z",
            "level": level,
            "locker": self.locker_id,
            "kind": kind,
            **fields,
        }
        try:
            self.stream.write(json.dumps(record, default=str, ensure_ascii=False) + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass  # a closed stderr must never take the daemon down
