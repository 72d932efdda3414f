"""A gateway's configuration comes from the registry: generated, then accepted by the gateway."""

from __future__ import annotations

from gateway.models import load_config
from runtime.cli import main


def register_gateway(factory) -> str:
    site = factory.site()
    gateway = factory.gateway("gw-north-1", site=site)
    factory.device("lift-a", site=site, gateway=gateway, modbus_host="10.20.0.10")
    factory.device("lift-b", site=site, gateway=gateway, modbus_host="10.20.0.10", modbus_unit=2)
    factory.device(
        "meter-1",
        site=site,
        kind="energy_meter",
        gateway=gateway,
        modbus_host="10.20.0.11",
        modbus_port=5020,
        modbus_unit=3,
    )
    factory.device(
        "elsewhere", site=site, gateway=factory.gateway("gw-2", site=site), modbus_host="10.9.9.9"
    )
    return gateway


def test_generated_config_passes_the_gateways_check(db_url, factory, tmp_path, monkeypatch, capsys):
    gateway = register_gateway(factory)
    factory.device("retired", site=factory.site(), gateway=gateway, modbus_host="10.20.0.99")
    from fleet.models import KINDS
    from fleet.service import retire

    retire(factory.conn, kind=KINDS["devices"], key=("retired",), at=factory.at)
    monkeypatch.setenv("VIGIL_DATABASE_URL", db_url)
    config = tmp_path / "gw.toml"
    assert (
        main(
            [
                "fleet",
                "gateway-config",
                gateway,
                "--broker-url",
                "mqtt://broker.local:1883",
                "--data-dir",
                str(tmp_path / "data"),
                "--output",
                str(config),
            ]
        )
        == 0
    )
    assert main(["gateway", "--config", str(config), "--check"]) == 0
    assert "gateway gw-north-1, 3 devices" in capsys.readouterr().out
    loaded = load_config(config)
    assert {(d.id, d.profile.model, d.host, d.port, d.unit) for d in loaded.devices} == {
        ("lift-a", "lift-controller", "10.20.0.10", 502, 1),
        ("lift-b", "lift-controller", "10.20.0.10", 502, 2),
        ("meter-1", "sdm630", "10.20.0.11", 5020, 3),
    }  # the other gateway's device and the retired one are not in it
    assert loaded.settings.broker.username == "gw-north-1"


def test_a_device_without_an_address_or_profile_is_named(db_url, factory, monkeypatch, capsys):
    site = factory.site()
    gateway = factory.gateway("gw-x", site=site)
    factory.device("pole-1", site=site, kind="light_pole", gateway=gateway)
    factory.device("lift-odd", site=site, gateway=gateway, model="TL-1000", modbus_host="10.0.0.5")
    monkeypatch.setenv("VIGIL_DATABASE_URL", db_url)
    assert main(["fleet", "gateway-config", gateway, "--broker-url", "mqtt://b:1883"]) == 1
    err = capsys.readouterr().err
    assert "device pole-1: column 'modbus_host': has no Modbus address" in err
    assert "device lift-odd: column 'model': model 'TL-1000' is no built-in profile" in err
    assert main(["fleet", "gateway-config", "gw-none", "--broker-url", "mqtt://b:1883"]) == 1
    assert "gateway 'gw-none' is not in service" in capsys.readouterr().err
