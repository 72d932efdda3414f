import re
import subprocess
import time
from pathlib import Path

from vigil import wire
from vigil.testing import MqttProbe
from vigil.wire import TelemetryBatch

DOC = Path(__file__).resolve().parent.parent / "docs" / "wire-format.md"


def documented_command() -> str:
    text = DOC.read_text()
    block = re.search(r"```sh\n(mosquitto_pub.*?)```", text, re.S)
    assert block, "docs/wire-format.md has no mosquitto_pub example"
    return block.group(1)


def test_the_documented_mosquitto_pub_example_is_a_valid_message(mqtt_url):
    port = int(mqtt_url.rsplit(":", 1)[1])
    command = documented_command().replace("-p 1883", f"-p {port}")
    topic = re.search(r"-t (\S+)", command).group(1)
    with MqttProbe(mqtt_url, topic) as probe:
        subprocess.run(["bash", "-c", command], check=True, timeout=10)
        message = probe.wait_for(1)[0]
    decoded = wire.decode(message.topic, message.payload, now_ms=int(time.time() * 1000))
    assert isinstance(decoded, TelemetryBatch), decoded
    assert decoded.samples[0].metric == "voltage_l1"
    assert decoded.samples[0].value == 230.0
