from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict

from vigil.config import ConfigError, load_file, load_settings, locate


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "vigil.toml"
    path.write_text(text)
    return path


def test_unknown_key_names_file_line_and_key(tmp_path):
    path = write(
        tmp_path, 'database_url = "postgresql://x"\n\n[ingest]\nworkers = 2\nbatch_sise = 3\n'
    )
    with pytest.raises(ConfigError) as err:
        load_settings(path, env={})
    assert err.value.source == str(path)
    assert err.value.key == "ingest.batch_sise"
    assert err.value.line == 5
    assert "unknown key" in str(err.value)
    assert str(path) in str(err.value)


def test_wrong_type_names_the_key(tmp_path):
    path = write(tmp_path, '[clock]\nkind = "accelerated"\nfactor = "fast"\n')
    with pytest.raises(ConfigError) as err:
        load_settings(path, env={})
    assert err.value.key == "clock.factor"
    assert err.value.line == 3


def test_out_of_range_value(tmp_path):
    path = write(tmp_path, "[ingest]\nflush_interval_ms = 5000\n")
    with pytest.raises(ConfigError) as err:
        load_settings(path, env={})
    assert err.value.key == "ingest.flush_interval_ms"
    assert "less than or equal to 200" in err.value.reason


def test_toml_syntax_error_names_the_line(tmp_path):
    path = write(tmp_path, "[api]\nport = 8000\n[ingest\nworkers = 1\n")
    with pytest.raises(ConfigError) as err:
        load_settings(path, env={})
    assert err.value.line == 3
    assert "invalid TOML" in err.value.reason


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "nope.toml", env={})


def test_environment_overrides_file(tmp_path):
    path = write(tmp_path, 'database_url = "postgresql://file"\n[ingest]\nworkers = 2\n')
    settings = load_settings(
        path, env={"VIGIL_DATABASE_URL": "postgresql://env", "VIGIL_MQTT_URL": "mqtt://h:1"}
    )
    assert settings.database_url == "postgresql://env"
    assert settings.mqtt_url == "mqtt://h:1"
    assert settings.ingest.workers == 2


def test_bad_environment_value_names_the_variable():
    with pytest.raises(ConfigError) as err:
        load_settings(None, env={"VIGIL_INGEST__WORKERS": "lots"})
    assert err.value.source == "environment VIGIL_INGEST__WORKERS"
    assert err.value.key == "ingest.workers"


def test_config_path_from_environment(tmp_path):
    path = write(tmp_path, "[api]\nport = 9001\n")
    assert load_settings(None, env={"VIGIL_CONFIG": str(path)}).api.port == 9001


class Device(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    port: int


class Gateway(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    devices: list[Device]


def test_load_file_points_into_arrays_of_tables(tmp_path):
    path = write(
        tmp_path,
        'id = "gw1"\n\n[[devices]]\nid = "a"\nport = 502\n\n[[devices]]\nid = "b"\nport = "x"\n',
    )
    with pytest.raises(ConfigError) as err:
        load_file(path, Gateway)
    assert err.value.key == "devices[1].port"
    assert err.value.line == 9


def test_locate_falls_back_to_the_enclosing_table():
    text = "[a]\nx = 1\n[b]\ny = { z = 1 }\n"
    assert locate(text, ("b", "y", "z")) == 4
    assert locate(text, ("a",)) == 1
    assert locate(text, ("c",)) is None
