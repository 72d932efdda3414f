"""Per-gateway MQTT credentials and ACLs from the registry, on a real Mosquitto.

``vigil fleet credentials`` issues passwords (only their hash is stored) and writes the broker's
``password_file`` and ``acl_file``: a gateway publishes only under its own id and reads only its
own commands, a smart pole likewise under its own id, and ingest still receives everything.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from fleet import flows
from runtime.cli import main
from tests.ingest.conftest import (
    Fleet,
    count,
    running_worker,
    telemetry,
    wait_for_count,
)
from vigil.services import MosquittoBroker
from vigil.testing import MqttProbe
from vigil.wire import Channel, Command, CommandAction, encode, subscription, topic


class SecuredBroker(MosquittoBroker):
    """A private Mosquitto reading the password and ACL files the registry wrote."""

    def __init__(self, data_dir: Path, *, passwords: Path, acl: Path) -> None:
        super().__init__(data_dir)
        self.passwords, self.acl = passwords, acl

    def _write_config(self) -> Path:
        config = super()._write_config()
        text = config.read_text().replace("allow_anonymous true", "allow_anonymous false")
        config.write_text(text + f"password_file {self.passwords}\nacl_file {self.acl}\n")
        return config


def issue(tmp_path: Path, principal: str, flag: str) -> str:
    secret = tmp_path / f"{principal}.secret"
    assert (
        main(
            [
                "fleet",
                "credentials",
                principal,
                flag,
                "--password-file",
                str(tmp_path / "passwords"),
                "--acl-file",
                str(tmp_path / "acl"),
                "--secret-file",
                str(secret),
            ]
        )
        == 0
    )
    return secret.read_text().strip()


@pytest.fixture
def registered(db_url, factory, tmp_path, monkeypatch):
    monkeypatch.setenv("VIGIL_DATABASE_URL", db_url)
    site = factory.site()
    for gateway in ("gw-1", "gw-2"):
        factory.gateway(gateway, site=site)
        factory.device(
            f"{gateway}-m0", site=site, kind="energy_meter", gateway=gateway, model="sdm630"
        )
    factory.gateway("pole-7", site=site)  # a smart pole is its own gateway
    factory.device("pole-7", site=site, kind="light_pole", gateway="pole-7")
    secrets = {name: issue(tmp_path, name, "--gateway") for name in ("gw-1", "gw-2")}
    secrets["pole-7"] = issue(tmp_path, "pole-7", "--device")
    secrets["vigil-ingest"] = issue(tmp_path, "ingest", "--service")
    secrets["vigil-platform"] = issue(tmp_path, "platform", "--service")
    return secrets


@pytest.fixture
def secured(tmp_path, registered):
    broker = SecuredBroker(
        tmp_path / "mqtt", passwords=tmp_path / "passwords", acl=tmp_path / "acl"
    )
    broker.start()
    yield broker
    broker.kill()


def url_of(broker: MosquittoBroker, user: str, secret: str) -> str:
    return f"mqtt://{user}:{secret}@127.0.0.1:{broker.port}"


def test_only_hashes_are_stored_and_files_hold_every_live_credential(db, registered, tmp_path):
    rows = db.execute("SELECT username, password_hash FROM mqtt_credentials").fetchall()
    assert {r["username"] for r in rows} == {
        "gw-1",
        "gw-2",
        "pole-7",
        "vigil-ingest",
        "vigil-platform",
    }
    for row in rows:
        assert registered[row["username"]] not in row["password_hash"]
        assert row["password_hash"].startswith("$7$101$")
    acl = (tmp_path / "acl").read_text()
    assert "user gw-1\ntopic write vigil/v1/telemetry/gw-1/+" in acl
    assert "topic read vigil/v1/cmd/pole-7/+" in acl
    assert (tmp_path / "passwords").stat().st_mode & 0o077 == 0  # owner only
    # a revoked credential leaves both files
    files = ["--password-file", str(tmp_path / "passwords"), "--acl-file", str(tmp_path / "acl")]
    assert main(["fleet", "credentials", "gw-2", "--revoke", *files]) == 0
    assert "gw-2" not in (tmp_path / "passwords").read_text()
    assert "gw-2" not in (tmp_path / "acl").read_text()


def test_hash_is_the_one_mosquitto_passwd_writes():
    salt = bytes(range(12))
    hashed = flows.mosquitto_hash("secret", salt=salt)
    assert hashed.startswith("$7$101$AAECAwQFBgcICQoL$")


def test_a_gateway_cannot_publish_as_another_and_ingest_still_receives(
    db_url, clock, secured, registered, publisher_factory
):
    gw1 = Fleet("gw-1", ("gw-1-m0",), "none")
    gw2 = Fleet("gw-2", ("gw-2-m0",), "none")
    start = clock.now_ms()
    ingest_url = url_of(secured, "vigil-ingest", registered["vigil-ingest"])
    with running_worker(db_url=db_url, mqtt_url=ingest_url, clock=clock):
        intruder = publisher_factory(url_of(secured, "gw-2", registered["gw-2"]))
        # gw-2 forges gw-1's telemetry: the broker refuses it (ACL) and drops the connection
        forged = telemetry(gw1, device="gw-1-m0", seq=1, start_ms=start - 60_000)
        info = intruder.client.publish(*forged, qos=1)
        with contextlib.suppress(RuntimeError):  # refused with PUBACK 0x87, or disconnected
            info.wait_for_publish(10)
        # then publishes its own, which ingest stores: the broker handled the forgery first
        again = publisher_factory(url_of(secured, "gw-2", registered["gw-2"]))
        again.publish(*telemetry(gw2, device="gw-2-m0", seq=1, start_ms=start))
        own = publisher_factory(url_of(secured, "gw-1", registered["gw-1"]))
        own.publish(*telemetry(gw1, device="gw-1-m0", seq=1, start_ms=start))
        query = "SELECT count(*) FROM telemetry WHERE device_id = %s"
        assert wait_for_count(db_url, query.replace("%s", "'gw-2-m0'"), 10) == 10
        assert wait_for_count(db_url, query.replace("%s", "'gw-1-m0'"), 10) == 10
    forged = count(
        db_url,
        "SELECT count(*) FROM telemetry WHERE device_id = 'gw-1-m0' "
        "AND ts < to_timestamp(%s / 1000.0)",
        (start,),
    )
    assert forged == 0
    assert count(db_url, "SELECT count(*) FROM dead_letters") == 0  # dropped at the broker


def test_a_gateway_reads_only_its_own_commands(secured, registered, clock):
    platform = url_of(secured, "vigil-platform", registered["vigil-platform"])
    with (
        MqttProbe(url_of(secured, "gw-1", registered["gw-1"]), "vigil/v1/cmd/#") as own,
        MqttProbe(url_of(secured, "gw-2", registered["gw-2"]), "vigil/v1/cmd/#") as snoop,
        MqttProbe(platform, subscription(Channel.STATUS)) as sender,
    ):
        for gateway in ("gw-1", "gw-2"):
            command = Command(
                gateway, f"{gateway}-m0", f"c-{gateway}", CommandAction.DIM, clock.now_ms(), 50.0
            )
            name, payload = encode(command)
            assert name == topic(Channel.COMMAND, gateway, f"{gateway}-m0")
            sender._client.publish(name, payload, qos=1).wait_for_publish(10)
        # each reads only its own; gw-2's command was sent after gw-1's, on one session, so a
        # leaked gw-1 command would have reached the snoop before its own
        assert [m.topic for m in own.wait_for(1)] == ["vigil/v1/cmd/gw-1/gw-1-m0"]
        assert [m.topic for m in snoop.wait_for(1)] == ["vigil/v1/cmd/gw-2/gw-2-m0"]
