"""Lock boards: sans-I/O codecs, the shared serial transport and the drivers.

The daemon needs `open_buses`, `make_driver`, `BoardDriver`, `LockReading` and the errors. The
simulators live apart, in the top-level `board_sim` package, which the daemon never imports
(tests, benchmarks and `locker-sim` do).
"""

from daemon.io.boards.codec import BoardCodec, FrameError, LockReading
from daemon.io.boards.driver import BoardDriver, BoardHealth, make_codec, make_driver
from daemon.io.boards.transport import BoardPortError, BusError, SerialBus, make_buses, open_buses

__all__ = [
    "BoardCodec",
    "BoardDriver",
    "BoardHealth",
    "BoardPortError",
    "BusError",
    "FrameError",
    "LockReading",
    "SerialBus",
    "make_buses",
    "make_codec",
    "make_driver",
    "open_buses",
]
