"""One object for "the fleet's broker": registry + generated files + Mosquitto, or the embedded
fallback when Mosquitto is not installed. The demo and the test fixtures use it.

Adding an account takes effect at once: Mosquitto gets the regenerated files and a SIGHUP (checked
by logging in with the new account; restarted if the reload did not take), the embedded broker
rereads the registry on its own.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from broker.mosquitto_conf import DEFAULT_PREFIX, BrokerSettings, ConfigFiles, write_config
from broker.registry import Registry, Role
from broker.runner import MosquittoError, MosquittoProcess, find_mosquitto, free_port

if TYPE_CHECKING:
    from broker.embedded import EmbeddedBroker


class FleetBroker:
    """Registry at `registry_path`, files and persistence under `data_dir`, fixed ports.

    `kind` is "mosquitto" when Mosquitto is installed (and `embedded` is False), else "embedded".
    Lockers connect to `port`, consoles to `console_port` (Mosquitto has a listener for each; the
    embedded demo broker has one, so there both are `port`).
    """

    def __init__(
        self,
        registry_path: Path,
        data_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        prefix: str = DEFAULT_PREFIX,
        embedded: bool = False,
        console_port: int | None = None,
    ) -> None:
        self.registry_path = Path(registry_path)
        self.data_dir = Path(data_dir)
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.prefix = prefix
        self.kind: Literal["mosquitto", "embedded"] = (
            "embedded" if embedded or find_mosquitto() is None else "mosquitto"
        )
        if self.kind == "embedded":
            self.console_port = self.port
        else:
            while console_port is None or console_port == self.port:
                console_port = free_port(host)
            self.console_port = console_port
        self.settings = BrokerSettings(
            port=self.port, bind=host, data_dir=self.data_dir, prefix=prefix,
            user="root" if os.geteuid() == 0 else None,
            console_port=None if self.kind == "embedded" else self.console_port,
        )
        self.files: ConfigFiles | None = None
        self.mosquitto: MosquittoProcess | None = None
        self.embedded: EmbeddedBroker | None = None

    @property
    def notice(self) -> str | None:
        """What to tell the operator about the broker in use (None for Mosquitto)."""
        if self.kind == "mosquitto":
            return None
        from broker.embedded import NOT_INSTALLED, EmbeddedBroker

        probe = EmbeddedBroker(registry_path=self.registry_path)
        reason = NOT_INSTALLED if find_mosquitto() is None else "Embedded broker requested"
        return probe.describe(reason)

    @property
    def running(self) -> bool:
        """True while the broker serves."""
        if self.mosquitto is not None:
            return self.mosquitto.running
        return self.embedded is not None and self.embedded.is_running

    def write_files(self) -> ConfigFiles:
        """Regenerate mosquitto.conf, passwd and acl in the data dir from the registry."""
        self.files = write_config(Registry.load(self.registry_path), self.settings, self.data_dir)
        return self.files

    def start(self, timeout: float = 10.0) -> None:
        """Start on the fixed port (again, after `stop()`: same port, same persistence)."""
        if self.kind == "mosquitto":
            files = self.write_files()
            if self.mosquitto is None:
                self.mosquitto = MosquittoProcess(files.conf, port=self.port, host=self.host)
            self.mosquitto.start(timeout)
        else:
            from broker.embedded import EmbeddedBroker

            if self.embedded is None:
                self.embedded = EmbeddedBroker(
                    host=self.host, port=self.port, registry_path=self.registry_path,
                    prefix=self.prefix,
                )
            self.embedded.start(timeout)

    def stop(self) -> None:
        """Stop; Mosquitto saves sessions and retained messages first."""
        if self.mosquitto is not None:
            self.mosquitto.stop()
        if self.embedded is not None:
            self.embedded.stop()

    def restart(self) -> None:
        """Stop and start: clients see an outage."""
        self.stop()
        self.start()

    def add_account(self, username: str, role: Role, *, rotate: bool = False) -> str:
        """Add (or rotate) an account and make the running broker accept it; the password."""
        with Registry.edit(self.registry_path) as reg:
            password = reg.add(username, role, rotate=rotate)
        if self.mosquitto is not None:
            self.write_files()
            if self.mosquitto.running:
                port = self.port_for(role)
                self.mosquitto.reload()
                if not self.mosquitto.wait_login(username, password, timeout=3.0, port=port):
                    self.mosquitto.restart()  # a restart surely rereads the files
                    if not self.mosquitto.wait_login(username, password, timeout=3.0,
                                                     port=port):
                        raise MosquittoError(
                            f"new account {username!r} cannot log in; log tail:\n"
                            f"{self.mosquitto.log_tail()}"
                        )
        return password

    def port_for(self, role: Role | None) -> int:
        """Where an account of `role` logs in: consoles on `console_port`, lockers on `port`."""
        return self.console_port if role == "console" else self.port

    def add_locker(self, locker_id: str, *, rotate: bool = False) -> str:
        """A locker account usable right away; returns its password."""
        return self.add_account(locker_id, "locker", rotate=rotate)

    def add_console(self, name: str, *, rotate: bool = False) -> str:
        """A console account usable right away; returns its password."""
        return self.add_account(name, "console", rotate=rotate)

    def __enter__(self) -> FleetBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
