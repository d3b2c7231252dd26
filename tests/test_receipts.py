"""Receipts: golden text, ESC/POS bytes, and printers fed over a real TCP socket and a real pty."""

from __future__ import annotations

import asyncio
import os
import select
import socket
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from daemon.io.receipts.model import (
    OperationType,
    PaymentMethod,
    Receipt,
    ReceiptItem,
    VatRate,
    format_amount,
)
from daemon.io.receipts.printers import (
    DevicePrinter,
    FilePrinter,
    NetworkPrinter,
    PrinterError,
    ReceiptPrinter,
    SerialPrinter,
)
from daemon.io.receipts.render import (
    CODEPAGE_CP866,
    FEED_AND_PARTIAL_CUT,
    render_escpos,
    render_text,
)

SAMPLE = Receipt(
    locker_id="LK-0001",
    number=17,
    issued_at=datetime(2025, 3, 4, 10, 30, tzinfo=UTC),
    items=(
        ReceiptItem("Storage, cell 12, 3 h", 1, 26_500, VatRate.VAT20),
        ReceiptItem("Phone charging", 2, 5_000, VatRate.VAT20),
    ),
    currency="RUB",
    transaction_id="SIM-000001",
    pin="482913",
)

GOLDEN_EN_32 = """\
            RECEIPT
Locker                   LK-0001
Receipt No.                   17
Date            2025-03-04 10:30
--------------------------------
Storage, cell 12, 3 h
  1 x 265.00              265.00
Phone charging
  2 x 50.00               100.00
--------------------------------
TOTAL                 365.00 RUB
incl. VAT 20%              60.83
Paid by card              365.00
Transaction           SIM-000001
Tax system                   OSN
--------------------------------
          PIN: 482913
Enter this PIN on the locker
screen to open your cell. Keep
it secret.
--------------------------------
           Thank you!
"""

GOLDEN_RU_REFUND_42 = """\
            КВИТАНЦИЯ ВОЗВРАТА
Камера                             LK-0001
Квитанция №                             17
Дата                      04.03.2025 10:30
------------------------------------------
Storage, cell 12, 3 h
  1 x 265,00                        265,00
Phone charging
  2 x 50,00                         100,00
------------------------------------------
ИТОГ                            365,00 RUB
в т.ч. НДС 20%                       60,83
Возврат наличными                   365,00
Транзакция                      SIM-000001
СНО                                    OSN
------------------------------------------
                 Спасибо!
"""


def test_text_golden_en_32() -> None:
    assert render_text(SAMPLE, width=32) == GOLDEN_EN_32


def test_text_golden_ru_refund_without_pin_42() -> None:
    refund = replace(
        SAMPLE,
        language="ru",
        pin=None,
        operation=OperationType.REFUND,
        payment_method=PaymentMethod.CASH,
    )
    assert render_text(refund) == GOLDEN_RU_REFUND_42


def test_lines_fit_the_width() -> None:
    long = replace(SAMPLE, items=(ReceiptItem("Very long item name " * 5, 3, 123_456),))
    for width in (32, 42, 48):
        assert all(len(line) <= width for line in render_text(long, width).splitlines())
    with pytest.raises(ValueError, match="width"):
        render_text(SAMPLE, width=40)


def test_vat_totals_and_money_formatting() -> None:
    mixed = replace(
        SAMPLE,
        items=(
            *SAMPLE.items,
            ReceiptItem("Bag", 1, 1_000),
            ReceiptItem("Box", 1, 2_200, VatRate.VAT10),
        ),
    )
    assert mixed.total == 36_500 + 1_000 + 2_200
    assert mixed.vat_totals() == {VatRate.VAT20: 6_083, VatRate.NONE: 0, VatRate.VAT10: 200}
    text = render_text(mixed)
    assert "VAT not applicable" in text and "incl. VAT 10%" in text
    assert format_amount(1_999, "JPY") == "1999"
    assert format_amount(1_234, "KWD") == "1.234"
    assert format_amount(-5, "EUR") == "-0.05"
    assert format_amount(126_500, "RUB", "ru") == "1 265,00"
    yen = replace(SAMPLE, currency="JPY", items=(ReceiptItem("Locker", 1, 500),), pin=None)
    assert "TOTAL".ljust(25) + "500 JPY" in render_text(yen, 32).splitlines()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"items": ()}, "at least one item"),
        ({"currency": "rub"}, "ISO 4217"),
        ({"language": "de"}, "language"),
    ],
)
def test_bad_receipt_is_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        replace(SAMPLE, **kwargs)


def test_escpos_bytes() -> None:
    data = render_escpos(replace(SAMPLE, language="ru"))
    assert data.startswith(b"\x1b@" + CODEPAGE_CP866)
    assert CODEPAGE_CP866 == b"\x1bt\x11"
    assert b"\x1ba\x01\x1b!\x18" + "КВИТАНЦИЯ".encode("cp866") + b"\n" in data
    assert "PIN: 482913".encode("cp866") in data
    assert data.endswith(FEED_AND_PARTIAL_CUT) and FEED_AND_PARTIAL_CUT == b"\x1dVB\x00"


async def test_network_printer_delivers_whole_document() -> None:
    received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.set_result(await reader.read())  # until the printer adapter closes
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    data = render_escpos(SAMPLE) * 50  # larger than one socket buffer write
    async with server:
        printer: ReceiptPrinter = NetworkPrinter("127.0.0.1", port, timeout_s=2)
        await printer.print(data)
        assert await asyncio.wait_for(received, 2) == data


async def test_network_printer_down_is_a_printer_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nobody listens once the socket closes
    with pytest.raises(PrinterError, match=f"127.0.0.1:{port}"):
        await NetworkPrinter("127.0.0.1", port, timeout_s=1).print(b"x")


def _read_all(fd: int, size: int, timeout_s: float = 2.0) -> bytes:
    out = b""
    while len(out) < size and select.select([fd], [], [], timeout_s)[0]:
        out += os.read(fd, 65536)
    return out


async def test_serial_printer_over_a_pty() -> None:
    master, slave = os.openpty()
    try:
        data = render_escpos(replace(SAMPLE, language="ru"))
        reader = asyncio.get_running_loop().run_in_executor(None, _read_all, master, len(data))
        await SerialPrinter(os.ttyname(slave), baudrate=115200).print(data)
        assert await reader == data
    finally:
        os.close(master)
        os.close(slave)


async def test_serial_printer_missing_port() -> None:
    with pytest.raises(PrinterError, match="/dev/no-such-printer"):
        await SerialPrinter("/dev/no-such-printer").print(b"x")


async def test_device_printer_writes_to_a_character_device() -> None:
    master, slave = os.openpty()
    try:
        reader = asyncio.get_running_loop().run_in_executor(None, _read_all, master, 3)
        await DevicePrinter(os.ttyname(slave)).print(b"abc")
        assert await reader == b"abc"
    finally:
        os.close(master)
        os.close(slave)


async def test_file_printer_appends(tmp_path: Path) -> None:
    printer = FilePrinter(tmp_path / "printer.bin")
    await printer.print(b"one")
    await printer.print(b"two")
    assert (tmp_path / "printer.bin").read_bytes() == b"onetwo"
    with pytest.raises(PrinterError):
        await FilePrinter(tmp_path / "missing" / "p.bin").print(b"x")


async def test_file_printer_keeps_printed_pins_private(tmp_path: Path) -> None:
    """receipts.bin holds PINs: created 0600 under the usual umask, an old 0644 one tightened."""
    old = os.umask(0o022)
    try:
        await FilePrinter(tmp_path / "receipts.bin").print(b"PIN 123456")
        legacy = tmp_path / "legacy.bin"
        legacy.write_bytes(b"PIN 654321")
        legacy.chmod(0o644)
        await FilePrinter(legacy).print(b"more")
    finally:
        os.umask(old)
    assert (tmp_path / "receipts.bin").stat().st_mode & 0o777 == 0o600
    assert legacy.stat().st_mode & 0o777 == 0o600
    assert legacy.read_bytes() == b"PIN 654321more"
