"""What lockerd leaves unloaded until its configuration uses it (issue 12: RSS <= 60 MB).

A top-level import added in the wrong place would silently put megabytes back in every locker's
memory: cryptography alone is about 7 MB. The code is still reached on first use (the signing,
notifier, fleet and payment tests run it); here, a fresh interpreter that loads lockerd as it
starts (cli, app, kiosk, both businesses) must not have loaded these modules yet.
"""

from __future__ import annotations

import json
import subprocess
import sys

#: Loaded only when used: signed commands and configs (a fleet link or trusted keys), the fleet
#: side, the SMTP and HTTP SMS clients (the first message), the payment simulator, printers.
LAZY = ("cryptography", "contract.signing", "contract.messages", "daemon.fleet",
        "daemon.remote_commands", "aiosmtplib", "urllib.request", "fleet_io.smtp_email",
        "fleet_io.sms_gateway", "daemon.io.payment.simulator", "daemon.io.fleet_link", "aiomqtt")


def test_lockerd_starts_without_the_modules_its_configuration_may_never_use() -> None:
    probe = ("import json, sys\n"
             "import daemon.cli, daemon.app, daemon.kiosk, daemon.parcels.wiring\n"
             "import daemon.storage.wiring, daemon.config\n"
             f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {LAZY!r}"
             f" or m in {LAZY!r})))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, timeout=60)
    assert json.loads(out.stdout) == []
