"""What the benchmarks measure alike: a percentile of samples, a process's resident memory."""

from __future__ import annotations

from pathlib import Path


def percentile(values: list[float], p: float) -> float:
    """The `p`-th percentile (nearest rank) of non-empty `values`."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def rss_mb(pid: int) -> float:
    """Resident memory of process `pid` in MB (MiB), from /proc; 0.0 when it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return 0.0
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0
