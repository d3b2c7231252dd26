"""The command language of `locker-sim`, shared by its stdin and its control socket.

One command per line; the answer is one line starting `ok` or `error` (status: a table then
`ok`). Board numbers are simulator board indexes (0 when left out); locks are 1-based.
"""

from __future__ import annotations

from board_sim.simulator import PtySimulator

HELP = """\
open [B] L            open the door of lock L by hand (no unlock frame; works on stuck locks)
close [B] L           close the door
stuck [B] L [on|off]  keep the lock from opening on unlock (default on)
item [B] L on|off     item sensor (Kerong boards)
silent on|off [B]     stop answering (whole bus, or board B)
garbage on|off        answer with random bytes
badsum on|off         answer with a corrupted checksum
autoclose MS|off      doors close by themselves MS ms after opening
status                door table
help                  this text
quit                  stop the simulator"""


class Quit(Exception):
    """The `quit` command."""


def _switch(word: str) -> bool:
    if word in ("on", "1", "yes", "true"):
        return True
    if word in ("off", "0", "no", "false"):
        return False
    raise ValueError(f"expected on or off, got {word!r}")


def _board_lock(args: list[str]) -> tuple[int, int]:
    numbers = [int(a) for a in args]
    if len(numbers) == 1:
        return 0, numbers[0]
    if len(numbers) == 2:
        return numbers[0], numbers[1]
    raise ValueError("expected [BOARD] LOCK")


def status_table(sim: PtySimulator) -> str:
    """One line per board, two characters per lock.

    `.` closed, `o` open, `S` stuck and closed, `O` stuck and open; `*` after it: item present.
    """
    lines = []
    for board in sim.snapshot():
        marks = []
        for lock in board.locks:
            mark = "o" if lock.open else "."
            if lock.stuck:
                mark = mark.upper() if lock.open else "S"
            marks.append(mark + ("*" if lock.item else " "))
        flags = " silent" if board.silent else ""
        lines.append(f"board {board.index} addr {board.address}{flags}: {''.join(marks).rstrip()}")
    return "\n".join(lines)


def execute(sim: PtySimulator, line: str) -> str:
    """Run one command line; return the answer. Raises Quit for `quit`."""
    words = line.split()
    if not words:
        return ""
    cmd, args = words[0].lower(), words[1:]
    try:
        if cmd == "quit" or cmd == "exit":
            raise Quit
        if cmd == "help":
            return HELP + "\nok"
        if cmd == "status":
            return status_table(sim) + "\nok"
        if cmd == "open":
            sim.force_open(*_board_lock(args))
        elif cmd == "close":
            sim.close_door(*_board_lock(args))
        elif cmd == "stuck":
            on = True
            if args and args[-1] in ("on", "off"):
                on = _switch(args.pop())
            sim.set_stuck(*_board_lock(args), on)
        elif cmd == "item":
            if not args:
                raise ValueError("expected [BOARD] LOCK on|off")
            present = _switch(args.pop())
            sim.set_item(*_board_lock(args), present)
        elif cmd == "silent":
            if not args:
                raise ValueError("expected on|off [BOARD]")
            board = int(args[1]) if len(args) > 1 else None
            sim.set_silent(_switch(args[0]), board)
        elif cmd == "garbage":
            sim.set_garbage(_switch(args[0] if args else ""))
        elif cmd == "badsum":
            sim.set_bad_checksum(_switch(args[0] if args else ""))
        elif cmd == "autoclose":
            word = args[0] if args else ""
            sim.set_auto_close(None if word == "off" else int(word))
        else:
            return f"error unknown command {cmd!r} (try help)"
    except (ValueError, IndexError) as exc:
        return f"error {exc}"
    return "ok"
