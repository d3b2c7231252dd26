"""The packed recipient list (contract/recipient_list.py): a locker keeps 10,000 recipients in
under 1 MB, and must answer exactly as the list of models it replaced: the same recipients in the
same order, the same look-ups, the same search hits, the same validation errors and dump."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from contract.parcels import ParcelsSection
from contract.recipient_list import RecipientList
from contract.recipients import Recipient
from daemon.parcels.directory import RecipientDirectory
from tests.test_parcels_directory import PEOPLE


def _people(n: int) -> list[Recipient]:
    out = list(PEOPLE)
    for i in range(n):
        out.append(Recipient(
            id=f"p{i:05d}", name=f"Получатель {i} Recipient", number=str(i) if i % 3 else None,
            department=f"Dept {i % 17}" if i % 2 else None,
            phone=f"+7916{i:07d}" if i % 5 else None, email=f"p{i}@example.org",
            language=("en", "ru", None)[i % 3]))
    return out


def test_the_packed_list_holds_the_same_recipients_in_the_same_order() -> None:
    people = _people(500)
    packed = RecipientList(people)
    assert len(packed) == len(people)
    assert list(packed) == people and packed == people
    assert [packed[i] for i in range(len(people))] == people
    assert packed[-1] == people[-1] and packed[3:7] == people[3:7]
    assert [r.model_dump() for r in packed] == [r.model_dump() for r in people]
    assert list(packed.ids()) == [r.id for r in people]
    with pytest.raises(IndexError):
        packed[len(people)]
    assert RecipientList() == [] and len(RecipientList()) == 0


def test_get_finds_every_id_and_nothing_else() -> None:
    people = _people(500)
    packed = RecipientList(people)
    for r in people:
        assert packed.get(r.id) == r
    for missing in ("", "p", "p00500", "r0", "zzz", "r10"):
        assert packed.get(missing) is None


def test_search_over_the_packed_list_answers_as_over_the_models() -> None:
    people = _people(2_000)
    plain, packed = RecipientDirectory.load(people), RecipientDirectory.load(RecipientList(people))
    for typed in ("101", "john", "семен", "ПЁТР", "получатель 12", "dept 3", "12", "777", "hnso",
                  "recipient", "nobody"):
        assert packed.search(typed) == plain.search(typed), typed
        assert packed.search(typed, limit=100) == plain.search(typed, limit=100), typed


def test_a_section_validates_as_before_and_round_trips() -> None:
    rows = [r.model_dump(exclude_none=True) for r in _people(50)]
    section = ParcelsSection.model_validate({"recipients": rows})
    assert isinstance(section.recipients, RecipientList)
    assert section.recipient("p00042") == Recipient.model_validate(rows[len(PEOPLE) + 42])
    assert section.model_dump(mode="json")["recipients"] == [
        Recipient.model_validate(r).model_dump(mode="json") for r in rows]
    assert ParcelsSection.model_validate(section.model_dump()) == section
    bad = [*rows[:3], {**rows[3], "phone": "12345"}]
    with pytest.raises(ValidationError) as caught:
        ParcelsSection.model_validate({"recipients": bad})
    assert [e["loc"] for e in caught.value.errors()] == [("recipients", 3, "phone")]
    with pytest.raises(ValidationError, match=r"recipients\[4\]\.id: duplicate"):
        ParcelsSection.model_validate({"recipients": [*rows[:4], rows[0]]})
