"""A command whose reader went away (`locker-console status | head`) ends quietly.

Python raises BrokenPipeError on the first write (or the final flush) after the reader closed the
pipe, and then prints a traceback, or "Exception ignored ... BrokenPipeError" at exit. A shell
program in that situation dies of SIGPIPE, which the shell reports as 128 + 13 = 141; every
console program of the fleet (lockerd ctl, locker-console, locker-broker) ends the same way,
without a word on stderr.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

#: What a shell reports for a program killed by SIGPIPE (128 + 13).
EXIT_CLOSED_PIPE = 141


def run_quietly_on_closed_pipe(main: Callable[[], int]) -> int:
    """`main()`'s exit code, with its output flushed; EXIT_CLOSED_PIPE when stdout's reader left."""
    try:
        code = main()
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # Point stdout at /dev/null so that the interpreter's own flush at exit cannot fail
        # again (and print "Exception ignored ...").
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_CLOSED_PIPE
