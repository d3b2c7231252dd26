"""Simulated lock boards on a pty, for tests, benchmarks, demos and `locker-sim`.

Apart from the drivers (`daemon.io.boards`) so that a production daemon never loads them: this
package speaks the boards' side of the protocols with the drivers' own codecs and checksums, and
the daemon must never import it (an import-linter contract says so).
"""
