"""Structured log lines: one JSON object per line on stderr, one line per transition and alarm.

Technicians grep them and log shippers parse them; keep keys stable.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
import traceback
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


#: Python logging levels as the journal names them.
_LEVELS = ((logging.ERROR, "error"), (logging.WARNING, "warning"), (logging.INFO, "info"))


class JournalHandler(logging.Handler):
    """Python logging (board drivers, uvicorn, asyncio, warnings) as journal lines, so that
    nothing lockerd writes to stderr is plain text among the JSON lines."""

    def __init__(self, journal: Journal) -> None:
        super().__init__()
        self.journal = journal

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level = next((name for no, name in _LEVELS if record.levelno >= no), "debug")
            fields: dict[str, Any] = {"logger": record.name, "message": record.getMessage()}
            if record.exc_info:
                fields["traceback"] = "".join(traceback.format_exception(*record.exc_info))
            self.journal.line("log", level=level, **fields)
        except Exception:  # a log record that cannot be formatted must not take anything down
            pass


def install_journal_logging(journal: Journal, level: int = logging.WARNING) -> None:
    """Route every Python log record, warning and uncaught thread exception of this process
    through `journal` (a daemon's own lines are already journal lines)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(JournalHandler(journal))
    root.setLevel(level)
    logging.captureWarnings(True)
    logging.raiseExceptions = False

    def thread_crashed(args: threading.ExceptHookArgs) -> None:
        journal.line("thread_crashed", level="error", thread=getattr(args.thread, "name", None),
                     error=repr(args.exc_value), traceback="".join(traceback.format_exception(
                         args.exc_type, args.exc_value, args.exc_traceback)))

    threading.excepthook = thread_crashed
