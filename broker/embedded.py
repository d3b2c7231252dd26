"""An embedded pure-Python broker (amqtt) for a one-machine demo when Mosquitto is not installed.

With a registry it checks the same passwords (`$7$` hashes) and the same topic rules as the
generated Mosquitto ACL, through two small amqtt plugins that reread the registry when it changes.
It keeps nothing on disk: a restart loses sessions and retained messages. For demos only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from amqtt.broker import Broker
from amqtt.contexts import Action, BaseContext
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

from broker.mosquitto_conf import DEFAULT_PREFIX, LOCKER_READS, LOCKER_WRITES
from broker.registry import Registry, RegistryError, Role

log = logging.getLogger(__name__)

NOT_INSTALLED = "Mosquitto is not installed"
_CHECKED = "passwords and topic rules from the registry are checked, nothing is persisted"
_OPEN = "no passwords or ACLs enforced"
EMBEDDED_NOTICE = (
    f"{NOT_INSTALLED}: running the embedded amqtt broker — for demos only ({_CHECKED})"
)


def filter_within(requested: str, allowed: str) -> bool:
    """True when every topic matched by filter `requested` is also matched by filter `allowed`.

    A concrete topic is a filter without wildcards, so this also answers "does topic match".
    """
    req, allow = requested.split("/"), allowed.split("/")
    for i, a in enumerate(allow):
        if a == "#":
            return True
        if i >= len(req):
            return False
        r = req[i]
        if a == "+":
            if r == "#":
                return False
            continue
        if r != a:
            return False
    return len(req) == len(allow)


def access_allowed(
    role: Role | None, username: str | None, topic: str, write: bool, prefix: str = DEFAULT_PREFIX
) -> bool:
    """The docs/architecture.md access rules, the same ones the Mosquitto ACL file encodes."""
    if role == "console":
        return filter_within(topic, f"{prefix}/#")
    if role == "locker" and username:
        suffixes = LOCKER_WRITES if write else LOCKER_READS
        return any(filter_within(topic, f"{prefix}/{username}/{s}") for s in suffixes)
    return False


class _RegistryCache:
    """The registry, reread when its file changes (so `add-locker` needs no broker restart)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int, int] | None = None
        self._registry = Registry(self.path)

    def get(self) -> Registry:
        try:
            st = self.path.stat()
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = (0, 0, 0)
        if stamp != self._stamp:
            try:
                self._registry = Registry.load(self.path)
                self._stamp = stamp
            except RegistryError as exc:
                log.error("keeping the previous registry: %s", exc)
        return self._registry


class RegistryAuthPlugin(BaseAuthPlugin):
    """amqtt auth plugin: username/password checked against the registry's `$7$` hashes."""

    @dataclass
    class Config:
        """Plugin configuration (filled by amqtt from the broker config)."""

        registry_path: str = ""

    def __init__(self, context: BaseContext) -> None:
        super().__init__(context)
        self._cache = _RegistryCache(Path(self.config.registry_path))

    async def authenticate(self, *, session: Session) -> bool | None:
        if not session.username or session.password is None:
            return False
        password = session.password
        if isinstance(password, bytes | bytearray):
            password = bytes(password).decode("utf-8", "replace")
        return self._cache.get().verify(session.username, password)


class RegistryAclPlugin(BaseTopicPlugin):
    """amqtt topic plugin: publish, subscribe and delivery checked with `access_allowed`."""

    @dataclass
    class Config:
        """Plugin configuration (filled by amqtt from the broker config)."""

        registry_path: str = ""
        prefix: str = DEFAULT_PREFIX

    def __init__(self, context: BaseContext) -> None:
        super().__init__(context)
        self._cache = _RegistryCache(Path(self.config.registry_path))

    async def topic_filtering(
        self, *, session: Session | None = None, topic: str | None = None,
        action: Action | None = None,
    ) -> bool | None:
        if session is None or not topic:
            return False
        username = session.username
        role = self._cache.get().role_of(username) if username else None
        write = action == Action.PUBLISH
        return access_allowed(role, username, topic, write, self.config.prefix)


class EmbeddedBroker:
    """amqtt on (host, port). `start()`/`stop()` run it in a background thread with its own loop
    (for sync callers); `start_async()`/`stop_async()` run it in the caller's loop.

    `registry_path=None` gives an open broker (anonymous, no ACL) for the quickest demo.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 1883,
        registry_path: Path | None = None,
        prefix: str = DEFAULT_PREFIX,
    ) -> None:
        self.host = host
        self.port = port
        self.registry_path = Path(registry_path).resolve() if registry_path else None
        self.prefix = prefix
        self._broker: Broker | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None

    @property
    def enforces_access(self) -> bool:
        """True when passwords and topic rules are checked."""
        return self.registry_path is not None

    @property
    def is_running(self) -> bool:
        """True between a successful start and stop."""
        return self._broker is not None

    def describe(self, reason: str = NOT_INSTALLED) -> str:
        """The plain notice for the operator: why this broker, and what it does not do."""
        what = _CHECKED if self.enforces_access else _OPEN
        return f"{reason}: running the embedded amqtt broker — for demos only ({what})"

    @property
    def notice(self) -> str:
        """`describe()` for the usual reason: Mosquitto is not installed."""
        return self.describe()

    def amqtt_config(self) -> dict[str, Any]:
        """The amqtt broker configuration."""
        plugins: dict[str, Any]
        if self.registry_path is None:
            anonymous = "amqtt.plugins.authentication.AnonymousAuthPlugin"
            plugins = {anonymous: {"allow_anonymous": True}}
        else:
            reg = str(self.registry_path)
            plugins = {
                f"{__name__}.RegistryAuthPlugin": {"registry_path": reg},
                f"{__name__}.RegistryAclPlugin": {"registry_path": reg, "prefix": self.prefix},
            }
        return {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": plugins,
        }

    # -- in the caller's event loop ------------------------------------------------------------

    async def start_async(self) -> None:
        """Start listening in the running loop."""
        if self._broker is not None:
            return
        broker = Broker(self.amqtt_config())
        await broker.start()
        self._broker = broker

    async def stop_async(self) -> None:
        """Close the listener and every session."""
        broker, self._broker = self._broker, None
        if broker is not None:
            await broker.shutdown()

    async def __aenter__(self) -> EmbeddedBroker:
        await self.start_async()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop_async()

    # -- in a background thread ----------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        """Start in a background thread; returns once the port listens (or raises)."""
        if self._thread is not None:
            return
        ready = threading.Event()
        failure: list[BaseException] = []

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop_event = asyncio.Event()
            try:
                await self.start_async()
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                return
            ready.set()
            await self._stop_event.wait()
            await self.stop_async()

        self._thread = threading.Thread(
            target=asyncio.run, args=(main(),), name=f"amqtt-{self.port}", daemon=True
        )
        self._thread.start()
        if not ready.wait(timeout):
            raise TimeoutError(f"embedded broker did not start within {timeout} s")
        if failure:
            self._thread.join(timeout)
            self._thread = None
            raise failure[0]

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the background broker and wait for its thread."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        if self._loop is not None and self._stop_event is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                self._loop.call_soon_threadsafe(self._stop_event.set)
        thread.join(timeout)

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
