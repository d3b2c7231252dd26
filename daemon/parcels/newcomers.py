"""A recipient a courier adds at the kiosk: validated like an imported one, reported without
phone or e-mail.

The record (contract.recipients.Recipient) is kept in the locker's store by the app; the console
learns of it from `recipient_added`, which carries the id, name and department, and only whether
a phone or an e-mail exists (personal data stays on the locker).
"""

from __future__ import annotations

from collections.abc import Container

from contract.recipients import Recipient
from daemon.fsm.actions import Event


class DuplicateRecipient(ValueError):
    """A recipient with this id exists already."""


def added_recipient(recipient: Recipient, courier_id: str, known: Container[str]) -> Event:
    """The event recording that `courier_id` added `recipient`; DuplicateRecipient if the id
    is taken."""
    if recipient.id in known:
        raise DuplicateRecipient(f"recipient {recipient.id!r} exists already")
    data = {
        "recipient_id": recipient.id,
        "name": recipient.name,
        "courier_id": courier_id,
        "has_phone": recipient.phone is not None,
        "has_email": recipient.email is not None,
    }
    if recipient.department:
        data["department"] = recipient.department
    return Event("recipient_added", None, data)
