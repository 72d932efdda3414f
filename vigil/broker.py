"""The one parser of MQTT broker URLs (``mqtt://[user:password@]host[:port]``, ``mqtts://``)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

_DEFAULT_PORTS = {"mqtt": 1883, "tcp": 1883, "mqtts": 8883}


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Where a broker listens, and the credentials the URL carries (if any)."""

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None


def broker_address(url: str) -> BrokerAddress:
    """Parse a broker URL; a ValueError names the URL when it is not one."""
    parts = urlsplit(url)
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"not an mqtt://host:port URL: {url!r}")
    try:
        port = parts.port or _DEFAULT_PORTS[parts.scheme]
    except ValueError as exc:
        raise ValueError(f"not an mqtt://host:port URL: {url!r} ({exc})") from None
    return BrokerAddress(
        host=parts.hostname,
        port=port,
        tls=parts.scheme == "mqtts",
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )
