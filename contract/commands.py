"""The remote commands of the contract: every command type, its `args` model, how it ends.

One table that the locker's dispatcher (daemon.remote_commands), the console's CLI and
docs/asyncapi.yaml all follow; tests/test_contract_vocabulary.py fails when one of them names a
command the table lacks (or lacks one it names). A new command type is a new row here first.

The argument models only say what the wire carries: a cell id is any integer here (a cell the
locker does not have is `unknown_cell`, not `malformed`); whether the cell exists is the
locker's to say.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from contract.messages import MalformedPayload
from contract.recipients import EMAIL_PATTERN, RecipientId


class CommandType(StrEnum):
    """The `type` of a signed command."""

    OPEN = "open"
    BLOCK = "block"
    UNBLOCK = "unblock"
    WAIVE = "waive"
    REVEAL_PIN = "reveal-pin"
    EVICT = "evict"
    EXPECT_PARCEL = "expect-parcel"
    CREATE_RETURN = "create-return"
    REPORT_CELLS = "report-cells"


class CommandArgs(BaseModel):
    """Base of the `args` models: strict (no "3" for 3, no true for 1) and closed."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class CellArgs(CommandArgs):
    """`{"cell": N}`: a cell id of the locker's configuration."""

    cell: int


class EvictArgs(CellArgs):
    """`{"cell": N, "note": str}`: what was found in the cell and who witnessed it."""

    note: str

    @field_validator("note")
    @classmethod
    def _says_something(cls, note: str) -> str:
        if not note.strip():
            raise ValueError("note must not be blank")
        return note


#: Ids the console makes up for parcels and returns (a UUID fits; so does a courier's own id).
PARCEL_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
#: What a scanner may type: printable ASCII without spaces (as daemon.parcels reads barcodes).
BARCODE_PATTERN = r"^[!-~]{1,64}$"


class ExpectParcelArgs(CommandArgs):
    """`{"parcel_id", "barcode", "recipient_id"}`: the parcel a courier will scan (announced)."""

    parcel_id: Annotated[str, Field(pattern=PARCEL_ID_PATTERN)]
    barcode: Annotated[str, Field(pattern=BARCODE_PATTERN)]
    recipient_id: RecipientId


class CreateReturnArgs(CommandArgs):
    """`{"return_id", "recipient_id"}`: issue a return code (in the `done` result, once)."""

    return_id: Annotated[str, Field(pattern=PARCEL_ID_PATTERN)]
    recipient_id: RecipientId | None


class ReportCellsArgs(CommandArgs):
    """`{"email"}`: e-mail the locker's cell report (free and occupied by size) there."""

    email: Annotated[str, Field(pattern=EMAIL_PATTERN, max_length=320)]


class Executor(StrEnum):
    """Who carries a command out on the locker."""

    #: The cell machines: the lock moves (open, evict) or the cell's state does (block, unblock).
    CELL = "cell"
    #: The business holding the cell's tenancy answers it at once; no lock moves.
    BUSINESS = "business"
    #: The parcel business of the locker (no cell named: the locker picks or reports).
    PARCELS = "parcels"


@dataclass(frozen=True)
class CommandSpec:
    """One row of the command table."""

    type: CommandType
    # `builtins.type`: the field `type` above shadows the builtin in the class body.
    args: builtins.type[CommandArgs]
    executor: Executor
    #: `done` only once the door sensor saw the door open (else `done` follows `accepted`).
    settled_by_door: bool
    #: An audited act on a tenancy: the console refuses to send it with a blank `reason`.
    audited: bool
    #: The keys of `data` in its `done` result.
    done_data: tuple[str, ...]
    #: Keys of `done` data sent once and stored redacted, by the locker and the console.
    secret: tuple[str, ...] = ()


#: Every command a locker may be sent, in the order the console lists them.
COMMANDS: dict[CommandType, CommandSpec] = {
    spec.type: spec
    for spec in (
        CommandSpec(CommandType.OPEN, CellArgs, Executor.CELL, True, False, ("cell", "door")),
        CommandSpec(CommandType.BLOCK, CellArgs, Executor.CELL, False, False, ("cell", "state")),
        CommandSpec(CommandType.UNBLOCK, CellArgs, Executor.CELL, False, False,
                    ("cell", "state")),
        CommandSpec(CommandType.WAIVE, CellArgs, Executor.BUSINESS, False, True,
                    ("cell", "tenancy_id", "waived")),
        CommandSpec(CommandType.REVEAL_PIN, CellArgs, Executor.BUSINESS, False, True,
                    ("cell", "tenancy_id", "pin")),
        CommandSpec(CommandType.EVICT, EvictArgs, Executor.CELL, True, True, ("cell", "door")),
        CommandSpec(CommandType.EXPECT_PARCEL, ExpectParcelArgs, Executor.PARCELS, False, False,
                    ("parcel_id", "state")),
        CommandSpec(CommandType.CREATE_RETURN, CreateReturnArgs, Executor.PARCELS, False, False,
                    ("return_id", "return_code"), secret=("return_code",)),
        CommandSpec(CommandType.REPORT_CELLS, ReportCellsArgs, Executor.PARCELS, False, False,
                    ("queued",)),
    )
}


#: Commands on no cell (issue 12's parcel business): the locker's parcel business answers them
#: at once; the console sends them like the others (`parcels expect`, `returns create`, ...).
LOCKER_COMMANDS: dict[str, CommandSpec] = {
    str(t): spec for t, spec in COMMANDS.items() if spec.executor is Executor.PARCELS
}


class UnknownCommand(LookupError):
    """A command type that is not in the table (the locker answers `unsupported`)."""


def command_spec(type_: str) -> CommandSpec:
    """The row of `type_`; UnknownCommand if there is none."""
    try:
        return COMMANDS[CommandType(type_)]
    except ValueError:
        raise UnknownCommand(type_) from None


def parse_args(type_: str, args: Any) -> CommandArgs:
    """The validated `args` of a command of `type_`.

    Raises UnknownCommand for a type not in the table and MalformedPayload for args that do
    not fit its model (missing, extra or mistyped keys, a blank note)."""
    spec = command_spec(type_)
    if not isinstance(args, dict):
        raise MalformedPayload(f"args: expected an object, got {type(args).__name__}")
    try:
        return spec.args.model_validate(args)
    except ValidationError as exc:
        raise MalformedPayload(f"args of {type_!r}: {exc.errors()[0]['msg']}") from None
