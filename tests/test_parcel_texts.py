"""The parcel business's texts (daemon/parcels/texts.py): both languages say the same things with
the same placeholders, every refusal of the core has a message, the code reaches the recipient."""

from __future__ import annotations

import re
import string
from pathlib import Path

from daemon.parcels.texts import MESSAGES, NOTICES, message, notice

ROOT = Path(__file__).resolve().parent.parent


def fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def test_english_and_russian_have_the_same_texts_and_placeholders() -> None:
    assert set(NOTICES["en"]) == set(NOTICES["ru"])
    for kind, (subject, text) in NOTICES["en"].items():
        ru_subject, ru_text = NOTICES["ru"][kind]
        assert fields(subject) == fields(ru_subject), kind
        assert fields(text) == fields(ru_text), kind
    assert set(MESSAGES["en"]) == set(MESSAGES["ru"])
    for reason, text in MESSAGES["en"].items():
        assert fields(text) == fields(MESSAGES["ru"][reason]), reason


def test_every_refusal_of_the_core_has_a_message() -> None:
    source = "\n".join(p.read_text(encoding="utf-8")
                       for p in (ROOT / "daemon" / "parcels").glob("*.py"))
    reasons = set(re.findall(r'(?:ParcelError|StaffError)\(\s*"([a-z_]+)"', source))
    reasons |= set(re.findall(r'Login\(None, "([a-z_]+)"', source))
    assert {"duplicate_barcode", "cell_taken", "forbidden", "login_locked"} <= reasons
    assert reasons <= set(MESSAGES["en"])


def test_the_arrival_carries_address_hours_code_and_the_phone_hint() -> None:
    msg = notice("parcel_arrived", "ru", address="ул. Ленина 1", opening_hours="8-20",
                 code="123456", due="09.12 18:00", factor=True)
    assert msg.language == "ru"
    assert "123456" in msg.text and "ул. Ленина 1" in msg.text and "8-20" in msg.text
    assert "последние 4 цифры" in msg.text
    plain = notice("parcel_arrived", "de", address="Main St 1", opening_hours="8-20",
                   code="1234567890", due="Dec 9, 18:00")
    assert plain.language == "en" and "(with the last 4" not in plain.text
    assert message("no_cell", "ru", size="L") == "Нет свободной ячейки для посылки размера L."
    assert message("no_such_reason", "en") == "no_such_reason"
