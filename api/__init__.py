"""Web plumbing: auth, scope, the live stream and the static console (the app is assembled by
``runtime.api``)."""

from pathlib import Path

STATIC_DIR = Path(__file__).parent / "static"  # the console, served at /console
