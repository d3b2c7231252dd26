"""The one refusal type of the storage business, shown by the kiosk in the client's language."""

from __future__ import annotations

from daemon.core import BusinessError
from daemon.storage.texts import text


class StorageError(BusinessError):
    """A refusal the kiosk shows: `code` for the front end, `kind` for the kiosk to map to an
    HTTP status, text params."""

    def message(self, language: str) -> str:
        return text(language, self.code, self.params)
