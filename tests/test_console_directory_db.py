"""A parcel locker's directory in the console database, on SQLite and PostgreSQL: a list
replaced or merged, login codes unique per locker, a disabled login kept."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from contract.recipients import Recipient
from fleet_console.db import directory
from fleet_console.db.engine import Database, open_database
from tests.fixtures.postgres import PrivatePostgres


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/console.db"
    else:
        cluster: PrivatePostgres = request.getfixturevalue("postgres_cluster")
        url = cluster.create_database(f"dir_{uuid.uuid4().hex[:8]}")
    database = open_database(url)
    yield database
    database.dispose()


def _r(id_: str, name: str) -> Recipient:
    return Recipient(id=id_, name=name, phone="+79001234567")


def test_replace_merge_and_the_published_section(db: Database) -> None:
    with db.transaction() as s:
        assert directory.store_recipients(s, "P1", [_r("a", "A"), _r("b", "B")], "replace",
                                          1) == 2
        directory.store_recipients(s, "P2", [_r("a", "Other locker")], "replace", 1)
    with db.transaction() as s:
        assert directory.store_recipients(s, "P1", [_r("b", "B2"), _r("c", "C")], "merge",
                                          2) == 3
    with db.transaction() as s:
        assert [r["name"] for r in directory.recipients_section(s, "P1")] == ["A", "B2", "C"]
        assert directory.store_recipients(s, "P1", [_r("z", "Z")], "replace", 3) == 1
    with db.transaction() as s:
        assert directory.recipients_section(s, "P1") == [
            {"id": "z", "name": "Z", "phone": "+79001234567"}]
        assert [r["name"] for r in directory.recipients_section(s, "P2")] == ["Other locker"]


def test_login_codes_are_unique_per_locker_and_disable_keeps_the_row(db: Database) -> None:
    hash_ = "scrypt$16384$8$1$" + "A" * 22 + "$" + "B" * 43
    with db.transaction() as s:
        directory.add_staff(s, "P1", staff_id="c1", name="C", role="courier", code="1234",
                            pin_hash=hash_, now_ms=1)
        directory.add_staff(s, "P2", staff_id="c1", name="C", role="courier", code="1234",
                            pin_hash=hash_, now_ms=1)  # another locker: its own logins
    with db.transaction() as s, pytest.raises(directory.DirectoryError, match="taken"):
        directory.add_staff(s, "P1", staff_id="c2", name="D", role="operator", code="1234",
                            pin_hash=hash_, now_ms=1)
    with db.transaction() as s, pytest.raises(directory.DirectoryError, match="already"):
        directory.add_staff(s, "P1", staff_id="c1", name="D", role="operator", code="9999",
                            pin_hash=hash_, now_ms=1)
    with db.transaction() as s, pytest.raises(directory.DirectoryError, match="role"):
        directory.add_staff(s, "P1", staff_id="c3", name="D", role="boss", code="9998",
                            pin_hash=hash_, now_ms=1)
    with db.transaction() as s:
        directory.disable_staff(s, "P1", "c1", 5)
    with db.transaction() as s:
        assert directory.staff_section(s, "P1") == [{"id": "c1", "name": "C", "role": "courier",
                                                     "code": "1234", "pin_hash": hash_,
                                                     "disabled": True}]
        assert directory.staff_section(s, "P2")[0]["disabled"] is False
        directory.record_published_body(s, "P1", 1, "0" * 64, {"storage": {"a": 1}}, 1)
        directory.record_published_body(s, "P1", 2, "1" * 64, {"storage": {"a": 2}}, 2)
    with db.transaction() as s:
        assert directory.last_body(s, "P1") == {"storage": {"a": 2}}
        assert directory.last_body(s, "P2") is None
