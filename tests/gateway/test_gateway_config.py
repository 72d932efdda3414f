"""Gateway configuration: the example loads; each mistake is an error naming file, line, key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.models import ReportStrategy, load_config
from vigil.config import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "gateway" / "examples" / "gateway.toml"

VALID = """\
gateway_id = "gw-1"

[broker]
url = "mqtt://127.0.0.1:1883"

[[devices]]
id = "lift-1"
profile = "lift-controller"
host = "127.0.0.1"
unit = 1
"""


def write(tmp_path: Path, text: str, name: str = "gw.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value


def test_the_example_config_loads(tmp_path):
    config = load_config(EXAMPLE)
    assert config.gateway_id == "gw-north-1"
    assert [d.id for d in config.devices] == ["lift-a", "lift-b", "meter-main", "pole-17"]
    lift_a, lift_b, meter, pole = config.devices
    assert lift_a.connection == lift_b.connection == ("10.20.0.10", 502)
    assert meter.poll_s == 5 and meter.report is ReportStrategy.BOTH
    assert meter.deadband("frequency") == 0.05 and meter.deadband("voltage_l1") == 0.5
    assert pole.report_interval_s == pole.poll_s == 10
    assert lift_a.deadband("door_state") == 0.0  # state metrics report every change
    assert config.settings.broker.tls and config.settings.broker.port == 8883


def test_defaults_and_relative_paths(tmp_path):
    config = load_config(write(tmp_path, VALID))
    (device,) = config.devices
    assert (device.port, device.poll_s, device.timeout_s) == (502, 1.0, 1.0)
    assert device.report is ReportStrategy.PERIODIC
    assert config.buffer_path == tmp_path / ".vigil" / "gateway" / "buffer.sqlite3"


def test_malformed_toml_names_the_file_and_line(tmp_path):
    path = write(tmp_path, VALID.replace("unit = 1", "unit = = 1"))
    error = error_of(path)
    assert error.source == str(path) and error.line == 10
    assert "invalid TOML" in str(error)


def test_unknown_key_names_the_key_and_line(tmp_path):
    path = write(tmp_path, VALID.replace("unit = 1", "unit = 1\npoll_secs = 2"))
    error = error_of(path)
    assert (error.key, error.line, error.reason) == ("devices[0].poll_secs", 11, "unknown key")
    assert str(error).startswith(f"{path}:11: key 'devices[0].poll_secs'")


def test_bad_value_names_the_key(tmp_path):
    error = error_of(write(tmp_path, VALID.replace("unit = 1", 'unit = 1\nreport = "often"')))
    assert error.key == "devices[0].report" and error.line == 11


def test_unknown_profile_is_a_clear_error(tmp_path):
    path = write(tmp_path, VALID.replace('"lift-controller"', '"lift-controler"'))
    error = error_of(path)
    assert (error.key, error.line) == ("devices[0].profile", 8)
    assert "unknown profile 'lift-controler'" in error.reason
    assert "lift-controller" in error.reason  # the built-in ones are listed


def test_a_generated_high_mast_profile_is_a_built_in(tmp_path):
    gateway = load_config(write(tmp_path, VALID.replace('"lift-controller"', '"high-mast-4"')))
    metrics = set(gateway.devices[0].profile.metrics)
    assert {"lamp_4_on", "lamps_out"} <= metrics
    assert "lamp_5_on" not in metrics
    error = error_of(write(tmp_path, VALID.replace('"lift-controller"', '"high-mast-99"')))
    assert "unknown profile 'high-mast-99'" in error.reason


def test_missing_profile_file_is_a_clear_error(tmp_path):
    error = error_of(write(tmp_path, VALID.replace('"lift-controller"', '"maps/nope.toml"')))
    assert error.key == "devices[0].profile" and "does not exist" in error.reason


OVERLAPPING = """\
model = "odd-meter"
kind = "energy_meter"

[[registers]]
metric = "voltage_l1"
table = 4
address = 0
type = "float32"

[[registers]]
metric = "voltage_l2"
table = 4
address = 1
type = "float32"
"""


def test_overlapping_registers_in_a_custom_profile_name_the_profile_file(tmp_path):
    profile = write(tmp_path, OVERLAPPING, "odd-meter.toml")
    path = write(tmp_path, VALID.replace('"lift-controller"', '"odd-meter.toml"'))
    error = error_of(path)
    assert error.source == str(profile)
    assert error.key == "registers[1].address" and error.line == 13
    assert "overlaps registers[0]" in error.reason


def test_a_custom_profile_file_is_used(tmp_path):
    fixed = OVERLAPPING.replace("address = 1", "address = 2")
    write(tmp_path, fixed, "odd-meter.toml")
    config = load_config(write(tmp_path, VALID.replace('"lift-controller"', '"odd-meter.toml"')))
    assert config.devices[0].profile.model == "odd-meter"


def test_duplicates_and_foreign_deadbands_are_refused(tmp_path):
    twice = VALID + VALID[VALID.index("[[devices]]") :].replace("unit = 1", "unit = 2")
    error = error_of(write(tmp_path, twice))
    assert error.key == "devices[1].id" and "duplicate device id" in error.reason
    same_unit = VALID + VALID[VALID.index("[[devices]]") :].replace('"lift-1"', '"lift-2"')
    error = error_of(write(tmp_path, same_unit))
    assert error.key == "devices[1].unit" and "same host, port and unit" in error.reason
    foreign = VALID + "deadbands = { voltage_l1 = 1.0 }\n"
    error = error_of(write(tmp_path, foreign))
    assert error.key == "devices[0].deadbands.voltage_l1"
    assert "no metric 'voltage_l1'" in error.reason


def test_cli_check_reports_errors_and_exit_codes(tmp_path):
    bad = write(tmp_path, VALID.replace('"lift-controller"', '"nope"'))
    command = [sys.executable, "-m", "runtime.cli", "gateway", "--config"]
    result = subprocess.run([*command, str(bad), "--check"], capture_output=True, text=True)
    assert result.returncode == 2
    assert f"{bad}:8: key 'devices[0].profile': unknown profile 'nope'" in result.stderr
    result = subprocess.run([*command, str(EXAMPLE), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "gateway gw-north-1, 4 devices" in result.stdout


def test_cli_check_opens_the_buffer(tmp_path):
    config = write(tmp_path, VALID)
    buffer = load_config(config).buffer_path
    buffer.parent.mkdir(parents=True)
    buffer.write_bytes(b"not sqlite at all" * 100)
    command = [sys.executable, "-m", "runtime.cli", "gateway", "--config", str(config), "--check"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 1
    assert f"buffer {buffer} cannot be read" in result.stderr
    assert buffer.read_bytes() == b"not sqlite at all" * 100  # --check changes nothing
