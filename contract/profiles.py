"""Storage profiles: named, versioned bundles of cell groups, tariffs and scenario switches.

A profile reaches a locker in one of two ways and is the same document either way: as the `body`
of the fleet's signed configuration, where it is the `storage` section of a `ConfigBody`
(`Profile.to_body()` / `Profile.from_body()`; integers and strings only, so its canonical JSON and
hash are stable), or from a local TOML file for a locker without a console (`load_profile_file`).
The TOML file can also be pushed as a config body as is (the form before sections).

Which business serves a cell: its group's `business` (`storage` when absent, so profiles written
before there was a choice keep working; `parcels`; `service` for cells no business rents out).
Only storage groups carry a tariff.

Which tariff a cell uses: a cell named in a group (in `cells` or in an override) belongs to that
group; any other cell belongs to the group listing its size. Within the group, a per-cell override
beats the group's tariff. A cell may belong to one group only, and a size to one group only, so the
answer is never ambiguous.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from contract.config_file import ConfigError, describe_validation_error, read_toml
from contract.money import Currency
from contract.parcels import ParcelsSection
from contract.pricing import ChargingTariff, RentalTariff, StepTariff, TariffId
from contract.topics import MAX_CELL_ID

CellSize = Literal["S", "M", "L"]
CellId = Annotated[int, Field(ge=1, le=MAX_CELL_ID)]
Language = Annotated[str, Field(pattern=r"^[a-z]{2,3}(-[A-Z]{2})?$")]

#: Which business serves a cell group; `service`: none (a technician's or a spare cell).
BusinessName = Literal["storage", "parcels", "service"]

# A message of our own that starts with a key path ("steps: ...") continues the location path.
_KEY_PREFIX_RE = re.compile(r"^[A-Za-z_][\w.\[\]]*: ")


class ProfileError(ValueError):
    """A profile that cannot be used; str() names the key and what is wrong."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class CellOverride(_Model):
    """A cell with its own tariff and/or charging tariff; the cell belongs to the group."""

    cell: CellId
    tariff: TariffId | None = None
    charging_tariff: TariffId | None = None

    @model_validator(mode="after")
    def _overrides_something(self) -> CellOverride:
        if self.tariff is None and self.charging_tariff is None:
            raise ValueError(
                f"cell: the override of cell {self.cell} sets neither tariff nor charging_tariff"
            )
        return self


class CellGroup(_Model):
    """Cells priced alike: chosen by size and/or by explicit cell ids."""

    name: str = Field(min_length=1)
    sizes: list[CellSize] = Field(default_factory=list)
    cells: list[CellId] = Field(default_factory=list)
    #: Absent: storage (kept absent in a config body, so today's bodies hash as before).
    business: BusinessName | None = None
    #: The storage tariff; storage groups only.
    tariff: TariffId | None = None
    #: The cells have a powered socket for phones.
    charging: bool = False
    charging_tariff: TariffId | None = None
    overrides: list[CellOverride] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> CellGroup:
        if not self.sizes and not self.cells and not self.overrides:
            raise ValueError("sizes: a group needs sizes or cells to apply to")
        if self.serves == "storage" and self.tariff is None:
            raise ValueError("tariff: a storage group needs a tariff")
        if self.serves != "storage" and (self.tariff or self.charging or self.overrides):
            raise ValueError(f"tariff: a {self.serves} group has no tariff, charging or overrides")
        if self.charging and self.charging_tariff is None:
            raise ValueError("charging_tariff: a charging group needs a charging_tariff")
        if not self.charging and self.charging_tariff is not None:
            raise ValueError("charging_tariff: set charging = true to use a charging tariff")
        for i, over in enumerate(self.overrides):
            if over.charging_tariff is not None and not self.charging:
                raise ValueError(
                    f"overrides[{i}].charging_tariff: cell {over.cell} is in a group "
                    f"without charging"
                )
        for i, size in enumerate(self.sizes):
            if size in self.sizes[:i]:
                raise ValueError(f"sizes[{i}]: size {size} is listed twice")
        return self

    @property
    def serves(self) -> BusinessName:
        """The business of the group's cells."""
        return self.business or "storage"

    def member_cells(self) -> list[int]:
        """Cells named by id: listed ones and overridden ones."""
        return [*self.cells, *(o.cell for o in self.overrides if o.cell not in self.cells)]

    def override_for(self, cell_id: int) -> CellOverride | None:
        return next((o for o in self.overrides if o.cell == cell_id), None)


class Scenario(_Model):
    """The switches of the kiosk's work scenario."""

    #: Phone number confirmed by an SMS code, or a PIN printed on the receipt.
    auth: Literal["sms", "printed_pin"]
    #: prepaid: a period up front, overdue after it, debt at pickup; partial: prepay, extend
    #: later; postpaid: pay at pickup.
    payment_mode: Literal["prepaid", "partial", "postpaid"]
    #: Open the cell and keep the rental going (refused while there is debt).
    temporary_access: bool = False
    languages: list[Language] = Field(min_length=1)
    default_language: Language
    #: After this the rental is overdue whatever was paid; None: only the tariff's limit.
    storage_limit_s: int | None = Field(None, ge=1)
    #: Periods the kiosk offers to prepay (prepaid, partial), ascending; unused by postpaid.
    prepaid_periods_s: list[Annotated[int, Field(ge=1)]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        for i, lang in enumerate(self.languages):
            if lang in self.languages[:i]:
                raise ValueError(f"languages[{i}]: language {lang!r} is listed twice")
        if self.default_language not in self.languages:
            raise ValueError(
                f"default_language: {self.default_language!r} is not among languages "
                f"{self.languages}"
            )
        if self.payment_mode in ("prepaid", "partial") and not self.prepaid_periods_s:
            raise ValueError(
                f"prepaid_periods_s: payment_mode {self.payment_mode!r} needs at least one "
                f"period to offer"
            )
        periods = self.prepaid_periods_s
        for i in range(1, len(periods)):
            if periods[i] <= periods[i - 1]:
                raise ValueError(
                    f"prepaid_periods_s[{i}]: periods must be ascending without repeats "
                    f"({periods[i]} after {periods[i - 1]})"
                )
        limit = self.storage_limit_s
        if limit is not None and periods and periods[-1] > limit:
            raise ValueError(
                f"prepaid_periods_s: period {periods[-1]} s is longer than storage_limit_s "
                f"({limit} s)"
            )
        return self


class Profile(_Model):
    """A named, versioned storage profile, as assigned to lockers by the console."""

    name: str = Field(min_length=1)
    version: int = Field(ge=1)
    currency: Currency
    tariffs: list[StepTariff] = Field(min_length=1)
    charging_tariffs: list[ChargingTariff] = Field(default_factory=list)
    cell_groups: list[CellGroup] = Field(min_length=1)
    scenario: Scenario

    @model_validator(mode="after")
    def _check_references(self) -> Profile:
        tariffs = _unique_ids("tariffs", self.tariffs, self.currency)
        charging = _unique_ids("charging_tariffs", self.charging_tariffs, self.currency)
        names: set[str] = set()
        cell_owner: dict[int, str] = {}
        size_owner: dict[str, str] = {}
        for g, group in enumerate(self.cell_groups):
            where = f"cell_groups[{g}]"
            if group.name in names:
                raise ValueError(f"{where}.name: duplicate group name {group.name!r}")
            names.add(group.name)
            if group.tariff is not None:
                _known(f"{where}.tariff", group.tariff, tariffs, "tariff")
            _known(f"{where}.charging_tariff", group.charging_tariff, charging, "charging tariff")
            for i, over in enumerate(group.overrides):
                _known(f"{where}.overrides[{i}].tariff", over.tariff, tariffs, "tariff")
                _known(
                    f"{where}.overrides[{i}].charging_tariff",
                    over.charging_tariff,
                    charging,
                    "charging tariff",
                )
                if group.override_for(over.cell) is not over:
                    raise ValueError(
                        f"{where}.overrides[{i}].cell: cell {over.cell} is overridden twice"
                    )
            seen_here: set[int] = set()
            for i, cell in enumerate(group.cells):
                if cell in seen_here:
                    raise ValueError(f"{where}.cells[{i}]: cell {cell} is listed twice")
                seen_here.add(cell)
            for cell in group.member_cells():
                if cell in cell_owner:
                    raise ValueError(
                        f"{where}: cell {cell} is already in group {cell_owner[cell]!r}; "
                        f"a cell belongs to one group"
                    )
                cell_owner[cell] = group.name
            for i, size in enumerate(group.sizes):
                if size in size_owner:
                    raise ValueError(
                        f"{where}.sizes[{i}]: size {size} is already in group "
                        f"{size_owner[size]!r}; a size belongs to one group"
                    )
                size_owner[size] = group.name
        return self

    # -- lookups ----------------------------------------------------------------------------
    def tariff(self, tariff_id: str) -> StepTariff:
        """The storage tariff with this id; KeyError if the profile has none."""
        for tariff in self.tariffs:
            if tariff.id == tariff_id:
                return tariff
        raise KeyError(f"profile {self.name!r} has no tariff {tariff_id!r}")

    def charging_tariff(self, tariff_id: str) -> ChargingTariff:
        """The charging tariff with this id; KeyError if the profile has none."""
        for tariff in self.charging_tariffs:
            if tariff.id == tariff_id:
                return tariff
        raise KeyError(f"profile {self.name!r} has no charging tariff {tariff_id!r}")

    def group_for_cell(self, cell_id: int, size: str) -> CellGroup:
        """The group a cell belongs to: by id first, then by size; LookupError if none."""
        for group in self.cell_groups:
            if cell_id in group.cells or group.override_for(cell_id) is not None:
                return group
        for group in self.cell_groups:
            if size in group.sizes:
                return group
        raise LookupError(f"profile {self.name!r}: no cell group covers cell {cell_id} ({size})")

    def business_of_cell(self, cell_id: int, size: str) -> BusinessName | None:
        """The business serving a cell; None if no group covers it."""
        try:
            return self.group_for_cell(cell_id, size).serves
        except LookupError:
            return None

    def tariff_for_cell(self, cell_id: int, size: str) -> StepTariff:
        """The storage tariff of a cell: its override, else its group's tariff; LookupError
        if the cell is not a storage cell."""
        group = self.group_for_cell(cell_id, size)
        if group.tariff is None:
            raise LookupError(f"profile {self.name!r}: cell {cell_id} serves {group.serves}")
        over = group.override_for(cell_id)
        return self.tariff(over.tariff if over and over.tariff else group.tariff)

    def charging_tariff_for_cell(self, cell_id: int, size: str) -> ChargingTariff | None:
        """The charging tariff of a cell, or None if its group does not charge."""
        group = self.group_for_cell(cell_id, size)
        if not group.charging:
            return None
        over = group.override_for(cell_id)
        chosen = over.charging_tariff if over and over.charging_tariff else group.charging_tariff
        assert chosen is not None  # validated: a charging group has a charging tariff
        return self.charging_tariff(chosen)

    def rental_tariff(self, cell_id: int, size: str) -> RentalTariff:
        """What a rental starting now in this cell keeps for its whole life."""
        return RentalTariff(
            storage=self.tariff_for_cell(cell_id, size),
            charging=self.charging_tariff_for_cell(cell_id, size),
        )

    def storage_limit_s(self, cell_id: int, size: str) -> int | None:
        """The shorter of the scenario's storage limit and the cell tariff's maximum period."""
        tariff_limit = self.tariff_for_cell(cell_id, size).max_period_s
        limits = [x for x in (self.scenario.storage_limit_s, tariff_limit) if x is not None]
        return min(limits) if limits else None

    def uncovered_cells(self, cells: Iterable[tuple[int, str]]) -> list[int]:
        """Ids of the locker's (cell id, size) pairs that no group covers: apply only if empty."""
        missing = []
        for cell_id, size in cells:
            try:
                self.group_for_cell(cell_id, size)
            except LookupError:
                missing.append(cell_id)
        return missing

    # -- wire -------------------------------------------------------------------------------
    def to_body(self) -> dict[str, Any]:
        """The JSON object for a signed config body: ints and strings, absent keys for None."""
        return self.model_dump(mode="json", exclude_none=True)

    @classmethod
    def from_body(cls, body: Any) -> Profile:
        """Validate a decoded config body (or TOML table); ProfileError names the bad key."""
        if not isinstance(body, dict):
            raise ProfileError(f"a profile is a JSON object, got {type(body).__name__}")
        try:
            return cls.model_validate(body)
        except ValidationError as exc:
            raise ProfileError(describe_profile_error(exc)) from None


def _unique_ids(
    field: str, tariffs: Sequence[StepTariff | ChargingTariff], currency: str
) -> set[str]:
    ids: set[str] = set()
    for i, tariff in enumerate(tariffs):
        if tariff.id in ids:
            raise ValueError(f"{field}[{i}].id: duplicate tariff id {tariff.id!r}")
        ids.add(tariff.id)
        if tariff.currency != currency:
            raise ValueError(
                f"{field}[{i}].currency: tariff {tariff.id!r} is in {tariff.currency} but the "
                f"profile is in {currency}"
            )
    return ids


def _known(where: str, ref: str | None, ids: set[str], kind: str) -> None:
    if ref is not None and ref not in ids:
        known = ", ".join(sorted(ids)) or "none"
        raise ValueError(f"{where}: unknown {kind} id {ref!r} (known: {known})")


def describe_profile_error(exc: ValidationError) -> str:
    """One line naming the key; a nested model's own message is placed under its location."""
    text = describe_validation_error(exc)
    err = exc.errors()[0]
    if err["type"] == "value_error" and err["loc"]:
        loc = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in err["loc"]).replace(
            ".[", "["
        )
        joiner = "." if _KEY_PREFIX_RE.match(text) else ": "
        text = f"{loc}{joiner}{text}"
    return text


def load_profile_file(path: str | Path) -> Profile:
    """A profile from a local TOML file (a locker without a console); ConfigError if unusable."""
    raw = read_toml(path, "profile")
    try:
        return Profile.from_body(raw)
    except ProfileError as exc:
        raise ConfigError(f"{path}: {exc}") from None


# -- the signed configuration body ------------------------------------------------------------
#: The sections of a signed configuration body, one per part of the locker it configures.
CONFIG_SECTIONS = ("locker", "storage", "parcels")


class LockerSection(_Model):
    """Locker-wide settings the fleet pushes (none yet: an empty table is accepted)."""


class ConfigBody(_Model):
    """The `body` of a signed configuration, in sections: `{"storage": <profile>, ...}`.

    A body in the form before sections, a bare storage profile, is still accepted and read as
    `{"storage": <that profile>}`: lockers and consoles of both ages keep talking."""

    locker: LockerSection | None = None
    storage: Profile | None = None
    parcels: ParcelsSection | None = None

    @classmethod
    def from_body(cls, body: Any) -> ConfigBody:
        """Validate a decoded body in either form; ProfileError names the bad key."""
        if not isinstance(body, dict):
            raise ProfileError(f"a configuration body is a JSON object, got {type(body).__name__}")
        if not is_sectioned(body):
            return cls(storage=Profile.from_body(body))
        try:
            return cls.model_validate(body)
        except ValidationError as exc:
            raise ProfileError(describe_profile_error(exc)) from None

    def to_body(self) -> dict[str, Any]:
        """The sectioned JSON object (sections that are None left out)."""
        return self.model_dump(mode="json", exclude_none=True)


def is_sectioned(body: Any) -> bool:
    """True for a body in sections; False for one in the form before them (a bare profile,
    which never has a key named like a section)."""
    return isinstance(body, dict) and any(key in body for key in CONFIG_SECTIONS)


def sectioned(body: dict[str, Any]) -> dict[str, Any]:
    """`body` in sections: a bare profile becomes the `storage` section; a sectioned body is
    returned as it is."""
    return body if is_sectioned(body) else {"storage": body}
