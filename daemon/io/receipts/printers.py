"""Thin receipt-printer adapters: they only move ready-made bytes (serial, device file, network,
file); a failure is a PrinterError that says which printer and why.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Protocol

import serial

# -- printers ---------------------------------------------------------------------------------


class PrinterError(Exception):
    """The printer could not take the bytes; the reason says which printer and why."""


class ReceiptPrinter(Protocol):
    """Anything that takes ready-made printer bytes."""

    async def print(self, data: bytes) -> None: ...


class SerialPrinter:
    """A printer on a serial line (a tty path or a pyserial URL): open, write, close."""

    def __init__(self, port: str, baudrate: int = 9600, timeout_s: float = 5.0) -> None:
        self.port = port
        self.baudrate = baudrate
        self.timeout_s = timeout_s

    async def print(self, data: bytes) -> None:
        await asyncio.to_thread(self._write, data)

    def _write(self, data: bytes) -> None:
        try:
            with serial.serial_for_url(
                self.port, baudrate=self.baudrate, write_timeout=self.timeout_s
            ) as line:
                line.write(data)
                line.flush()
        except (serial.SerialException, OSError) as exc:
            raise PrinterError(f"serial printer {self.port}: {exc}") from exc


class DevicePrinter:
    """A printer that is a character device (USB printer class, /dev/usb/lp0): write the file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    async def print(self, data: bytes) -> None:
        await asyncio.to_thread(self._write, data)

    def _write(self, data: bytes) -> None:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_NOCTTY)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
        except OSError as exc:
            raise PrinterError(f"printer device {self.path}: {exc}") from exc


class NetworkPrinter:
    """A network printer on its raw port (9100): connect, send, close."""

    def __init__(self, host: str, port: int = 9100, timeout_s: float = 5.0) -> None:
        self.host = host
        self.port = port
        self.timeout_s = timeout_s

    async def print(self, data: bytes) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                _, writer = await asyncio.open_connection(self.host, self.port)
                try:
                    writer.write(data)
                    await writer.drain()
                    if writer.can_write_eof():
                        writer.write_eof()
                finally:
                    writer.close()
                    await writer.wait_closed()
        except (OSError, TimeoutError) as exc:
            raise PrinterError(f"network printer {self.host}:{self.port}: {exc!r}") from exc


class FilePrinter:
    """Appends the bytes to a file: a stand-in printer for demos and tests.

    Printed PINs land there, so the file is the locker user's alone (0600), whatever the umask,
    and one left readable by an older version is tightened at the next receipt.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    async def print(self, data: bytes) -> None:
        await asyncio.to_thread(self._append, data)

    def _append(self, data: bytes) -> None:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with open(fd, "ab") as f:
                if os.fstat(fd).st_mode & 0o077:
                    os.fchmod(fd, 0o600)
                f.write(data)
        except OSError as exc:
            raise PrinterError(f"file printer {self.path}: {exc}") from exc
