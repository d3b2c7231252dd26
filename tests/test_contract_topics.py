"""Topic names: every row of docs/architecture.md's table, built and parsed back, under any
prefix."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contract.topics import (
    DEFAULT_PREFIX,
    MAX_CELL_ID,
    TOPIC_SPECS,
    Direction,
    ParsedTopic,
    TopicError,
    TopicKind,
    Topics,
    locker_of,
    parse_topic,
)

T = Topics()

EXPECTED = [
    (T.status("L1"), "lockers/L1/status", TopicKind.STATUS, None),
    (T.cell("L1", 7), "lockers/L1/cells/7", TopicKind.CELL, 7),
    (T.events("L1"), "lockers/L1/events", TopicKind.EVENTS, None),
    (T.events_ack("L1"), "lockers/L1/events/ack", TopicKind.EVENTS_ACK, None),
    (T.cmd("L1"), "lockers/L1/cmd", TopicKind.CMD, None),
    (T.cmd_result("L1"), "lockers/L1/cmd/result", TopicKind.CMD_RESULT, None),
    (T.config("L1"), "lockers/L1/config", TopicKind.CONFIG, None),
    (T.config_applied("L1"), "lockers/L1/config/applied", TopicKind.CONFIG_APPLIED, None),
    (T.notify("L1"), "lockers/L1/notify", TopicKind.NOTIFY, None),
    (T.delivered("L1"), "lockers/L1/delivered", TopicKind.DELIVERED, None),
    (T.events_resend("L1"), "lockers/L1/events/resend", TopicKind.EVENTS_RESEND, None),
    (T.events_gone("L1"), "lockers/L1/events/gone", TopicKind.EVENTS_GONE, None),
    (T.resync("L1"), "lockers/L1/resync", TopicKind.RESYNC, None),
]


@pytest.mark.parametrize(("built", "literal", "kind", "cell"), EXPECTED)
def test_builders_match_the_design_table(
    built: str, literal: str, kind: TopicKind, cell: int | None
) -> None:
    assert built == literal
    assert parse_topic(literal) == ParsedTopic("L1", kind, cell)


def test_every_kind_has_a_builder_and_a_spec() -> None:
    assert {kind for _, _, kind, _ in EXPECTED} == set(TopicKind)
    assert set(TOPIC_SPECS) == set(TopicKind)
    assert all(spec.qos == 1 for spec in TOPIC_SPECS.values())
    retained = {k for k, s in TOPIC_SPECS.items() if s.retain}
    assert retained == {
        TopicKind.STATUS,
        TopicKind.CELL,
        TopicKind.CONFIG,
        TopicKind.CONFIG_APPLIED,
    }


def test_default_prefix() -> None:
    assert Topics().prefix == DEFAULT_PREFIX == "lockers"


def test_custom_prefix_with_several_levels() -> None:
    t = Topics("acme/fleet")
    assert t.cmd("L-2") == "acme/fleet/L-2/cmd"
    assert t.parse("acme/fleet/L-2/cmd") == ParsedTopic("L-2", TopicKind.CMD)
    assert t.parse("lockers/L-2/cmd") is None
    assert parse_topic("acme/fleet/L-2/cells/3", "acme/fleet") == ParsedTopic(
        "L-2", TopicKind.CELL, 3
    )


@pytest.mark.parametrize(
    "topic",
    [
        "lockers/L1",
        "lockers/L1/",
        "lockers//status",
        "lockers/L+1/status",
        "lockers/#/status",
        "lockers/L1/unknown",
        "lockers/L1/cells",
        "lockers/L1/cells/",
        "lockers/L1/cells/0",
        "lockers/L1/cells/07",
        "lockers/L1/cells/x",
        "lockers/L1/cells/3/extra",
        "lockers/L1/cmd/result/extra",
        "lockers/L1/status/",
        "other/L1/status",
        "lockersX/L1/status",
        "",
    ],
)
def test_foreign_topics_parse_to_none(topic: str) -> None:
    assert parse_topic(topic) is None


@pytest.mark.parametrize("locker", ["", "a/b", "a+b", "a#", "with space", "é"])
def test_bad_locker_ids_are_refused(locker: str) -> None:
    with pytest.raises(TopicError, match="invalid locker id"):
        T.status(locker)


@pytest.mark.parametrize("cell", [0, -1, True, "3"])
def test_bad_cell_ids_are_refused(cell: object) -> None:
    with pytest.raises(TopicError, match="cell"):
        T.cell("L1", cell)  # type: ignore[arg-type]


def test_cell_argument_rules() -> None:
    with pytest.raises(TopicError, match="needs a cell id"):
        T.topic(TopicKind.CELL, "L1")
    with pytest.raises(TopicError, match="takes no cell id"):
        T.topic(TopicKind.CMD, "L1", 3)


@pytest.mark.parametrize("prefix", ["", "/lockers", "lockers/", "a//b", "lock+ers", "#"])
def test_bad_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(TopicError, match="prefix"):
        Topics(prefix)


def test_subscriptions() -> None:
    assert T.wildcard(TopicKind.STATUS) == "lockers/+/status"
    assert T.wildcard(TopicKind.CELL) == "lockers/+/cells/+"
    assert T.everything() == "lockers/#"
    assert sorted(T.console_subscriptions()) == sorted(
        [
            "lockers/+/status",
            "lockers/+/cells/+",
            "lockers/+/events",
            "lockers/+/cmd/result",
            "lockers/+/config/applied",
            "lockers/+/notify",
            "lockers/+/events/gone",
        ]
    )
    assert sorted(T.locker_subscriptions("L1")) == sorted(
        ["lockers/L1/cmd", "lockers/L1/config", "lockers/L1/events/ack", "lockers/L1/delivered",
         "lockers/L1/events/resend", "lockers/L1/resync"]
    )
    for kind, spec in TOPIC_SPECS.items():
        in_console = T.wildcard(kind) in T.console_subscriptions()
        assert in_console == (spec.direction is Direction.FROM_LOCKER)


locker_ids = st.from_regex(r"\A[A-Za-z0-9_.-]{1,20}\Z")
prefixes = st.lists(st.from_regex(r"\A[a-z0-9_-]{1,8}\Z"), min_size=1, max_size=3).map("/".join)


@given(
    prefix=prefixes,
    locker=locker_ids,
    kind=st.sampled_from(list(TopicKind)),
    cell=st.integers(min_value=1, max_value=MAX_CELL_ID),
)
def test_build_then_parse_round_trips(prefix: str, locker: str, kind: TopicKind, cell: int) -> None:
    t = Topics(prefix)
    c = cell if kind is TopicKind.CELL else None
    assert t.parse(t.topic(kind, locker, c)) == ParsedTopic(locker, kind, c)


@pytest.mark.parametrize("cell", ["10000", "18446744073709551616", "1099511627776", "0", "01"])
def test_cell_topics_beyond_the_bound_are_not_ours(cell: str) -> None:
    assert T.parse(f"lockers/L1/cells/{cell}") is None
    assert locker_of(f"lockers/L1/cells/{cell}") == "L1"  # but still charged to its locker
    assert T.parse(f"lockers/L1/cells/{MAX_CELL_ID}") == ParsedTopic("L1", TopicKind.CELL,
                                                                      MAX_CELL_ID)
    with pytest.raises(TopicError):
        T.cell("L1", MAX_CELL_ID + 1)


def test_locker_of_needs_a_valid_locker_level() -> None:
    assert locker_of("lockers/L1/cells/junk/7") == "L1"
    assert locker_of("lockers/L1") is None
    assert locker_of("other/L1/status") is None
    assert locker_of("lockers/a+b/status") is None
