pytest_plugins = [
    "tests.fixtures.mqtt_broker",
    "tests.fixtures.board_sim",
    "tests.fixtures.lockerd",
    "tests.fixtures.postgres",
    "tests.fixtures.messaging",
    "tests.fixtures.storage_locker",
    "tests.fixtures.console_ingest",
    "tests.fixtures.broker_cli",
]
