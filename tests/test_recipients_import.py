"""Recipient lists from spreadsheets (issue 12): every row checked, bad rows named by line."""

from __future__ import annotations

import io

from openpyxl import Workbook

from fleet_console.recipients_import import parse_file

GOOD = (
    "id,name,department,number,phone,email,language\n"
    "r1,Иванов Иван,Бухгалтерия,101,+7 (900) 123-45-67,,ru\n"
    "r2,John Smith,IT,7,,john@example.com,en\n"
)


def test_a_valid_csv_gives_records_with_normalised_phones() -> None:
    result = parse_file(GOOD.encode())
    assert result.ok, result.errors
    assert [r.id for r in result.recipients] == ["r1", "r2"]
    assert result.recipients[0].phone == "+79001234567"
    assert result.recipients[1].phone is None and result.recipients[1].language == "en"


def test_semicolons_a_bom_and_russian_headers() -> None:
    text = ("\ufeffИД;ФИО;Отдел;Номер;Телефон;Почта;Язык\r\n"
            "r1;Семёнова Алёна;Склад;12;+79001112233;;ru\r\n"
            "r2;Петров, Пётр;Склад;13;;p@example.com;\r\n")
    result = parse_file(text.encode("utf-8"))
    assert result.ok, result.errors
    assert [(r.name, r.department) for r in result.recipients] == [
        ("Семёнова Алёна", "Склад"), ("Петров, Пётр", "Склад")]
    assert parse_file(text.replace("ФИО", "Наименование").encode()).ok
    assert parse_file(text.replace("Почта", "Email").encode()).ok


def test_every_bad_row_is_reported_by_line_and_column_and_nothing_is_returned_as_ok() -> None:
    text = (
        "id,name,phone,email\n"
        "r1,Иванов Иван,+79001234567,\n"
        "r2,,+79001234568,\n"           # line 3: no name
        "r3,Петров,12345,\n"             # line 4: not a phone
        "r4,Сидоров,,\n"                 # line 5: neither phone nor e-mail
        "r1,Другой,+79001234569,\n"     # line 6: duplicate id
        "\n"
        "r6,иванов  иван,+79001234567,\n"  # line 8: same name and phone as line 2
        "bad id,Кто-то,,a@example.com\n"  # line 9: invalid id
    )
    result = parse_file(text.encode())
    assert not result.ok
    found = [(e.line, e.column) for e in result.errors]
    assert found == [(3, "name"), (4, "phone"), (5, None), (6, "id"), (8, "phone"),
                     (9, "id")], result.errors
    assert "international form" in str(result.errors[1])
    assert "duplicate id 'r1' (first on line 2)" in result.errors[3].message
    assert str(result.errors[0]).startswith("line 3, column name: ")


def test_headers_unknown_missing_or_twice_are_reported_on_line_1() -> None:
    result = parse_file(b"id,name,shoe size\nr1,A,42\n")
    assert [(e.line, e.column) for e in result.errors] == [(1, "shoe size")]
    result = parse_file(b"name,phone\nA,+79001234567\n")
    assert [(e.line, e.column, e.message) for e in result.errors] == [
        (1, "id", "required column missing")]
    result = parse_file("id,имя,name\n".encode())
    assert result.errors[0].message == "a second column for name"
    assert not parse_file(b"").ok
    assert not parse_file(b"id,name\n").ok


def test_not_utf8_is_a_plain_error() -> None:
    result = parse_file("id,name,phone\nr1,Иванов,+79001234567\n".encode("cp1251"))
    assert not result.ok and "UTF-8" in result.errors[0].message


def _xlsx(rows: list[list[object]]) -> bytes:
    book = Workbook()
    sheet = book.active
    for row in rows:
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def test_xlsx_with_numbers_typed_as_numbers_and_a_bad_row() -> None:
    data = _xlsx([["id", "Имя", "Номер", "Телефон"],
                  ["r1", "Иванов Иван", 101, "+79001234567"],
                  ["r2", "Петров Пётр", 102.0, "+79001234568"],
                  ["r4", "Без плюса", 104, 79001234569],  # a number, no country sign
                  [None, None, None, None],
                  ["r3", "Сидоров", 103, "no phone"]])
    result = parse_file(data)
    assert [r.number for r in result.recipients] == ["101", "102"]
    assert [(e.line, e.column) for e in result.errors] == [(4, "phone"), (6, "phone")]
    good = _xlsx([["id", "name", "phone"], ["r1", "Иванов Иван", "+79001234567"]])
    assert parse_file(good).ok


def test_a_broken_xlsx_is_a_plain_error() -> None:
    data = _xlsx([["id", "name"]])
    result = parse_file(data[: len(data) // 2])
    assert not result.ok and "XLSX" in result.errors[0].message
