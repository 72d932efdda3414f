"""One parser of broker URLs for every process (vigil.broker)."""

import pytest

from vigil.broker import BrokerAddress, broker_address


def test_broker_urls_and_their_defaults():
    assert broker_address("mqtt://10.0.0.5") == BrokerAddress("10.0.0.5", 1883)
    assert broker_address("mqtts://broker.example.com") == BrokerAddress(
        "broker.example.com", 8883, tls=True
    )
    assert broker_address("mqtt://gw%2D1:s%40cret@127.0.0.1:1884") == BrokerAddress(
        "127.0.0.1", 1884, username="gw-1", password="s@cret"
    )


@pytest.mark.parametrize("url", ["http://x:1883", "mqtt://", "broker:1883", "mqtt://h:99999"])
def test_anything_else_is_refused_naming_the_url(url):
    with pytest.raises(ValueError, match="not an mqtt://host:port URL"):
        broker_address(url)
