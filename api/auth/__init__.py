"""Users, roles, sessions and API keys."""
