"""The one refusal type of the storage business, shown by the kiosk in the client's language."""

from __future__ import annotations

from typing import Any

from daemon.storage.texts import text


class StorageError(Exception):
    """A refusal the kiosk shows: `code` for the front end, `status` for HTTP, text params."""

    def __init__(self, code: str, status: int = 409, **params: Any) -> None:
        super().__init__(code)
        self.code = code
        self.status = status
        self.params = params

    def message(self, language: str) -> str:
        return text(language, self.code, self.params)
