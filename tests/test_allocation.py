"""The one allocator (daemon/fsm/allocation.py): a cell for a business, pure; and the profile's
`business` key that says which business serves a cell group."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contract.profiles import Profile
from daemon.fsm.allocation import Candidate, allocate, available
from daemon.fsm.spec import SIZES


def cell(id_: int, size: str = "S", business: str | None = "storage", state: str = "free",
         door: str = "closed", pending: bool = False) -> Candidate:
    return Candidate(id_, size, business, state, door, pending)


def test_only_a_free_closed_idle_cell_of_the_business_is_given() -> None:
    cells = [cell(1, business="parcels"), cell(2, state="blocked"), cell(3, door="unknown"),
             cell(4, door="open"), cell(5, pending=True), cell(6, state="occupied"),
             cell(7, business=None), cell(8, business="service"), cell(9)]
    assert allocate(cells, "storage", "S") == 9
    assert allocate(cells, "storage", "S", reserved={9}) is None
    assert allocate(cells, "parcels", "S") == 1
    assert allocate(cells, "service", "S") == 8  # whoever asks for its own cells


def test_the_requested_size_or_the_smallest_that_fits() -> None:
    cells = [cell(1, "L"), cell(2, "M"), cell(3, "L"), cell(4, "S", state="occupied")]
    assert allocate(cells, "storage", "S") is None
    assert allocate(cells, "storage", "S", smallest_fitting=True) == 2
    assert allocate(cells, "storage", "L", smallest_fitting=True) == 1
    assert allocate(cells, "storage", "M") == 2
    with pytest.raises(ValueError):
        allocate(cells, "storage", "XL")


CANDIDATES = st.lists(
    st.builds(Candidate, st.integers(1, 50), st.sampled_from(SIZES),
              st.sampled_from(["storage", "parcels", "service", None]),
              st.sampled_from(["free", "occupied", "overdue", "blocked"]),
              st.sampled_from(["closed", "open", "unknown"]), st.booleans()),
    max_size=12,
)


@given(CANDIDATES, st.sampled_from(["storage", "parcels"]), st.sampled_from(SIZES),
       st.booleans())
def test_the_chosen_cell_fits_and_none_smaller_was_passed_over(
    cells: list[Candidate], business: str, size: str, smallest: bool
) -> None:
    chosen = allocate(cells, business, size, smallest_fitting=smallest)
    fitting = [c for c in cells if available(c, business)
               and (c.size == size or (smallest and SIZES.index(c.size) > SIZES.index(size)))]
    if not fitting:
        assert chosen is None
        return
    first = min(fitting, key=lambda c: (SIZES.index(c.size), cells.index(c)))
    assert chosen == first.id


BASE = {
    "name": "p", "version": 1, "currency": "RUB",
    "scenario": {"auth": "printed_pin", "payment_mode": "postpaid", "languages": ["en"],
                 "default_language": "en"},
    "tariffs": [{"id": "t", "name": "T", "currency": "RUB",
                 "steps": [{"length": 1, "unit": "hours", "price": 100}]}],
}


def test_a_group_says_which_business_serves_it_and_storage_is_the_default() -> None:
    profile = Profile.model_validate({**BASE, "cell_groups": [
        {"name": "parcels", "cells": [1, 2], "business": "parcels"},
        {"name": "tech", "cells": [3], "business": "service"},
        {"name": "rent", "sizes": ["S", "M"], "tariff": "t"},
    ]})
    assert [profile.business_of_cell(c, "S") for c in (1, 2, 3, 4)] == [
        "parcels", "parcels", "service", "storage"]
    assert profile.business_of_cell(5, "L") is None
    with pytest.raises(LookupError):
        profile.rental_tariff(1, "S")  # a parcel cell has no storage tariff
    assert "business" not in profile.to_body()["cell_groups"][2]  # today's bodies unchanged


@pytest.mark.parametrize("group, message", [
    ({"name": "g", "sizes": ["S"]}, "a storage group needs a tariff"),
    ({"name": "g", "sizes": ["S"], "business": "parcels", "tariff": "t"}, "has no tariff"),
    ({"name": "g", "sizes": ["S"], "business": "lending", "tariff": "t"}, "business"),
])
def test_a_group_that_does_not_fit_its_business_is_refused(group: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Profile.model_validate({**BASE, "cell_groups": [group]})
