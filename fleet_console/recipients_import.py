"""A locker's recipient list from a spreadsheet: bytes in, valid records or bad rows out.

Operators export the list from HR or a house register as CSV (UTF-8 with or without a BOM,
`,` or `;` as Excel writes it in Russian locales) or XLSX. The header row names the columns, in
English or Russian (`имя`, `отдел`, `номер`, `телефон`, `почта`...), in any order; unknown
columns are reported, not silently dropped. Every row is checked with
contract.recipients.Recipient (phones normalised to +E.164), and ids and (name, phone) pairs
must be unique. Pure: nothing is read from disk here and nothing is applied: the caller applies
the list only when `errors` is empty (all or nothing).
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from contract.recipients import Recipient

#: The record's fields, in the order a template lists them.
FIELDS = ("id", "name", "department", "number", "phone", "email", "language")
#: Header spellings operators use (folded: lower case, `ё` as `е`, spaces trimmed).
HEADER_ALIASES: dict[str, str] = {
    "id": "id", "ид": "id", "идентификатор": "id", "код": "id", "таб. номер": "id",
    "name": "name", "full name": "name", "имя": "name", "фио": "name", "наименование": "name",
    "получатель": "name",
    "department": "department", "dept": "department", "отдел": "department",
    "подразделение": "department", "квартира": "department",
    "number": "number", "no": "number", "номер": "number", "№": "number",
    "phone": "phone", "mobile": "phone", "телефон": "phone", "тел": "phone",
    "тел.": "phone", "мобильный": "phone",
    "email": "email", "e-mail": "email", "mail": "email", "почта": "email",
    "эл. почта": "email", "электронная почта": "email",
    "language": "language", "lang": "language", "язык": "language",
}
#: A file larger than this is refused before parsing (a 10,000-row list is about 1 MB).
MAX_FILE_BYTES = 20 * 1024 * 1024
MAX_ROWS = 50_000


@dataclass(frozen=True)
class RowError:
    """One problem: the file's line (1 = the header; XLSX: the sheet's row), the column, why."""

    line: int
    column: str | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "column": self.column, "message": self.message}

    def __str__(self) -> str:
        where = f"line {self.line}" + (f", column {self.column}" if self.column else "")
        return f"{where}: {self.message}"


@dataclass
class ImportResult:
    """The valid records, and every problem found; apply only when `errors` is empty."""

    recipients: list[Recipient] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def _fold(header: str) -> str:
    return " ".join(header.replace("\ufeff", "").strip().casefold().replace("ё", "е").split())


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # a number typed in Excel: 101.0 -> "101"
    return str(value).strip()


def _columns(header: list[str], out: ImportResult) -> dict[int, str] | None:
    columns: dict[int, str] = {}
    for index, raw in enumerate(header):
        name = _fold(raw)
        if not name:
            continue
        known = HEADER_ALIASES.get(name)
        if known is None:
            out.errors.append(RowError(1, raw.strip(), "unknown column; known: "
                                       + ", ".join(FIELDS)))
        elif known in columns.values():
            out.errors.append(RowError(1, raw.strip(), f"a second column for {known}"))
        else:
            columns[index] = known
    for required in ("id", "name"):
        if required not in columns.values():
            out.errors.append(RowError(1, required, "required column missing"))
    return columns if not out.errors else None


def _message(error: Any) -> str:
    message = str(error.get("msg", "invalid"))
    return message.removeprefix("Value error, ")


def parse_rows(rows: Iterable[tuple[int, list[Any]]]) -> ImportResult:
    """Check `(line, cells)` rows, the first being the header."""
    out = ImportResult()
    iterator = iter(rows)
    first = next(iterator, None)
    if first is None:
        out.errors.append(RowError(1, None, "the file is empty: a header row is needed"))
        return out
    columns = _columns([_cell(c) for c in first[1]], out)
    if columns is None:
        return out
    seen_ids: dict[str, int] = {}
    seen_people: dict[tuple[str, str], int] = {}
    count = 0
    for line, cells in iterator:
        values = {columns[i]: _cell(c) for i, c in enumerate(cells) if i in columns}
        if not any(values.values()):
            continue  # a blank line
        count += 1
        if count > MAX_ROWS:
            out.errors.append(RowError(line, None, f"more than {MAX_ROWS} rows"))
            break
        record = {k: v for k, v in values.items() if v}
        raw_id = record.get("id", "")
        if raw_id in seen_ids:
            out.errors.append(RowError(line, "id", f"duplicate id {raw_id!r} (first on "
                                                   f"line {seen_ids[raw_id]})"))
            continue
        if raw_id:
            seen_ids[raw_id] = line
        try:
            recipient = Recipient.model_validate(record)
        except ValidationError as exc:
            for error in exc.errors():
                loc = error.get("loc") or ()
                column = str(loc[0]) if loc else None
                out.errors.append(RowError(line, column, _message(error)))
            continue
        if recipient.phone is not None:
            person = (" ".join(recipient.name.casefold().split()), recipient.phone)
            if person in seen_people:
                out.errors.append(RowError(line, "phone", "the same name and phone as line "
                                                          f"{seen_people[person]}"))
                continue
            seen_people[person] = line
        out.recipients.append(recipient)
    if not out.recipients and not out.errors:
        out.errors.append(RowError(2, None, "no recipients: the file has only a header"))
    return out


def _csv_rows(data: bytes) -> Iterator[tuple[int, list[Any]]]:
    text = data.decode("utf-8-sig")
    # The header row decides: column names hold neither `,` nor `;`, while names and phones
    # in the rows may (csv.Sniffer guesses from the rows and is fooled by them).
    header = text[:8192].splitlines()[0] if text else ""
    delimiter = ";" if header.count(";") > header.count(",") else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    for cells in reader:
        yield reader.line_num, list(cells)


def _xlsx_rows(data: bytes) -> Iterator[tuple[int, list[Any]]]:
    from openpyxl import load_workbook  # only the import of an XLSX file needs it

    book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    try:
        sheet = book.worksheets[0]
        for number, cells in enumerate(sheet.iter_rows(values_only=True), start=1):
            yield number, list(cells)
    finally:
        book.close()


def is_xlsx(data: bytes) -> bool:
    """True for an XLSX (a zip) file, whatever its name."""
    return data[:4] == b"PK\x03\x04"


def parse_file(data: bytes) -> ImportResult:
    """Check a CSV or XLSX file's bytes (the kind is told by its content)."""
    if len(data) > MAX_FILE_BYTES:
        return ImportResult(errors=[RowError(0, None, f"the file is larger than "
                                                      f"{MAX_FILE_BYTES // 2**20} MiB")])
    if is_xlsx(data):
        try:
            return parse_rows(_xlsx_rows(data))
        except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
            return ImportResult(errors=[RowError(0, None, f"not a readable XLSX file: {exc}")])
    try:
        return parse_rows(_csv_rows(data))
    except UnicodeDecodeError as exc:
        return ImportResult(errors=[RowError(0, None, "not UTF-8 text (save the CSV as UTF-8): "
                                                      f"byte {exc.start}")])
    except csv.Error as exc:
        return ImportResult(errors=[RowError(0, None, f"not a readable CSV file: {exc}")])
