"""What the locker daemon and the fleet console must agree on.

`topics` (MQTT topic names), `messages` (payload models), `signing` (Ed25519 signed commands and
configurations), `config_file` (TOML loading with one actionable error). This package imports
nothing else of the project: both sides depend on it, it depends on neither.
"""
