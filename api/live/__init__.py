"""Live stream: LISTEN/NOTIFY fanned out to each user's scope."""
