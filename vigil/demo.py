"""``vigil demo``: everything on one machine. The composition root of the product.

Today it brings up the embedded database and broker and migrates; the simulators, gateway,
ingest, compliance, alerts and API join as they land.
"""

from __future__ import annotations

from vigil.config import Settings
from vigil.embedded import endpoints


def run_demo(settings: Settings) -> int:
    """Run the demo until Ctrl-C; returns the exit code."""
    from vigil.cli import wait_for_stop_signal

    with endpoints(settings) as where:
        print("Vigil demo is up.")
        print(f"  database: {where.database_url}")
        print(f"  broker:   {where.mqtt_url}")
        print("Press Ctrl-C to stop.", flush=True)
        wait_for_stop_signal()
        print("stopping...", flush=True)
    print("stopped.")
    return 0
