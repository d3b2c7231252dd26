"""locker-broker: the fleet registry, Mosquitto configuration generated from it, and running the
broker (Mosquitto, or an embedded amqtt broker for a one-machine demo).

Modules: `registry` (accounts, hashes only), `passwords` (Mosquitto `$7$` hashes), `mosquitto_conf`
(mosquitto.conf, passwd, acl), `runner` (the Mosquitto process, a login probe), `embedded`
(amqtt fallback), `fleet` (all of it behind one object), `cli` (the `locker-broker` command).
"""
