"""Register maps: the shared codec, block reads, and validation of profile files."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vigil.catalog import DeviceKind, is_metric
from vigil.config import ConfigError
from vigil.profiles import (
    Block,
    DataType,
    Order,
    Point,
    Register,
    Table,
    block_reads,
    builtin_models,
    builtin_profile,
    decode_block,
    decode_value,
    encode_value,
    high_mast_profile,
    in_range,
    load_profile,
    parse_profile,
    profile_reads,
)

ORDERS = st.sampled_from(list(Order))
SCALES = st.sampled_from([1.0, 0.1, 0.01, 0.001, 10.0])
INT_RANGES = {
    DataType.INT16: (-(2**15), 2**15 - 1),
    DataType.UINT16: (0, 2**16 - 1),
    DataType.INT32: (-(2**31), 2**31 - 1),
    DataType.UINT32: (0, 2**32 - 1),
}


def point(type_: DataType, **fields) -> Point:
    table = Table.COIL if type_ is DataType.BITS else Table.HOLDING
    return Point(table=table, address=fields.pop("address", 0), type=type_, **fields)


# -- codec round trips ---------------------------------------------------------------------------


@given(
    type_=st.sampled_from(list(INT_RANGES)),
    data=st.data(),
    byte_order=ORDERS,
    word_order=ORDERS,
    scale=SCALES,
)
def test_integer_types_round_trip_in_every_order_and_scale(
    type_, data, byte_order, word_order, scale
):
    low, high = INT_RANGES[type_]
    raw = data.draw(st.integers(low, high))
    spec = point(type_, byte_order=byte_order, word_order=word_order, scale=scale)
    words = encode_value(raw * scale, point=spec)
    assert len(words) == spec.count
    assert all(0 <= w <= 0xFFFF for w in words)
    assert decode_value(words, point=spec) == pytest.approx(raw * scale, rel=1e-12, abs=1e-9)


@given(
    value=st.floats(width=32, allow_nan=False, allow_infinity=False),
    byte_order=ORDERS,
    word_order=ORDERS,
)
def test_float32_round_trips_exactly(value, byte_order, word_order):
    spec = point(DataType.FLOAT32, byte_order=byte_order, word_order=word_order)
    words = encode_value(value, point=spec)
    assert len(words) == 2
    assert decode_value(words, point=spec) == value


@given(
    value=st.floats(allow_nan=False, allow_infinity=False),
    byte_order=ORDERS,
    word_order=ORDERS,
)
def test_float64_round_trips_exactly(value, byte_order, word_order):
    spec = point(DataType.FLOAT64, byte_order=byte_order, word_order=word_order)
    words = encode_value(value, point=spec)
    assert len(words) == 4
    assert decode_value(words, point=spec) == value


@given(
    text=st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=16),
    byte_order=ORDERS,
    length=st.integers(16, 21),
)
def test_strings_round_trip_nul_padded(text, byte_order, length):
    spec = point(DataType.STRING, length=length, byte_order=byte_order)
    words = encode_value(text, point=spec)
    assert len(words) == math.ceil(length / 2)
    assert decode_value(words, point=spec) == text


@given(value=st.booleans())
def test_bits_round_trip(value):
    spec = point(DataType.BITS)
    assert decode_value(encode_value(value, point=spec), point=spec) == float(value)


def test_orders_lay_bytes_and_words_out_as_documented():
    # 0x11223344 as uint32: ABCD, CDAB (word swap), BADC (byte swap), DCBA (both).
    value = 0x11223344
    layouts = {
        (Order.BIG, Order.BIG): [0x1122, 0x3344],
        (Order.BIG, Order.LITTLE): [0x3344, 0x1122],
        (Order.LITTLE, Order.BIG): [0x2211, 0x4433],
        (Order.LITTLE, Order.LITTLE): [0x4433, 0x2211],
    }
    for (byte_order, word_order), words in layouts.items():
        spec = point(DataType.UINT32, byte_order=byte_order, word_order=word_order)
        assert encode_value(value, point=spec) == words, (byte_order, word_order)


def test_little_endian_float64_puts_little_endian_bytes_on_the_wire():
    spec = point(DataType.FLOAT64, byte_order=Order.LITTLE, word_order=Order.LITTLE)
    words = encode_value(1234.5678, point=spec)
    # Modbus sends each register high byte first, so these are the bytes on the wire.
    raw = b"".join(w.to_bytes(2, "big") for w in words)
    assert struct.unpack("<d", raw)[0] == 1234.5678


def test_sdm630_test_vectors():
    meter = builtin_profile("sdm630")
    assert encode_value(230.0, point=meter.register("voltage_l1")) == [0x4366, 0x0000]
    assert encode_value(50.0, point=meter.register("frequency")) == [0x4248, 0x0000]
    assert decode_value([0x4366, 0x0000], point=meter.register("voltage_l2")) == 230.0


def test_scaled_integers_round_to_the_nearest_step():
    spec = point(DataType.UINT16, scale=0.1)
    assert encode_value(230.04, point=spec) == [2300]
    assert decode_value([2301], point=spec) == pytest.approx(230.1)


@pytest.mark.parametrize(
    ("type_", "value"),
    [
        (DataType.UINT16, -1),
        (DataType.UINT16, 65536),
        (DataType.INT16, 40000),
        (DataType.UINT32, 2**32),
        (DataType.FLOAT32, 1e39),
    ],
)
def test_values_that_do_not_fit_are_refused(type_, value):
    with pytest.raises(ValueError, match="does not fit"):
        encode_value(value, point=point(type_))


def test_string_longer_than_its_length_is_refused():
    with pytest.raises(ValueError, match="longer than 4 bytes"):
        encode_value("ABCDE", point=point(DataType.STRING, length=4))


def test_decode_needs_exactly_the_point_width():
    with pytest.raises(ValueError, match="needs 2 words"):
        decode_value([1], point=point(DataType.FLOAT32))


def test_in_range_uses_the_declared_bounds():
    reg = builtin_profile("sdm630").register("frequency")
    assert in_range(50.0, register=reg)
    assert not in_range(70.0, register=reg)
    assert not in_range(40.0, register=reg)


# -- block reads --------------------------------------------------------------------------------


def _words(table: Table, address: int, count: int) -> Point:
    type_ = {1: DataType.UINT16, 2: DataType.UINT32, 4: DataType.FLOAT64}[count]
    return Point(table=table, address=address, type=type_)


def test_adjacent_registers_merge_into_one_read():
    points = [_words(Table.INPUT, 0, 2), _words(Table.INPUT, 2, 2), _words(Table.INPUT, 4, 1)]
    assert block_reads(points) == [Block(Table.INPUT, 0, 5)]


def test_a_gap_splits_unless_allowed():
    points = [_words(Table.INPUT, 0, 2), _words(Table.INPUT, 10, 2)]
    assert block_reads(points) == [Block(Table.INPUT, 0, 2), Block(Table.INPUT, 10, 2)]
    assert block_reads(points, max_gap=8) == [Block(Table.INPUT, 0, 12)]


def test_tables_are_read_separately():
    points = [_words(Table.INPUT, 0, 1), _words(Table.HOLDING, 1, 1)]
    assert block_reads(points) == [Block(Table.HOLDING, 1, 1), Block(Table.INPUT, 0, 1)]


def test_reads_respect_125_registers_and_never_split_a_value():
    points = [_words(Table.HOLDING, 2 * i, 2) for i in range(100)]  # 200 contiguous registers
    blocks = block_reads(points)
    assert blocks == [Block(Table.HOLDING, 0, 124), Block(Table.HOLDING, 124, 76)]
    assert all(b.count <= 125 for b in blocks)


def test_bit_reads_respect_2000_bits():
    points = [Point(table=Table.COIL, address=i, type=DataType.BITS) for i in range(4500)]
    blocks = block_reads(points)
    assert [b.count for b in blocks] == [2000, 2000, 500]


@pytest.mark.parametrize("model", builtin_models())
def test_every_builtin_register_is_covered_by_exactly_one_read(model):
    profile = builtin_profile(model)
    blocks = profile_reads(profile)
    for reg in profile.registers:
        covering = [b for b in blocks if b.table is reg.table and b.start <= reg.address < b.end]
        assert len(covering) == 1, reg.metric
        assert reg.end <= covering[0].end


def test_decode_block_returns_each_metric_in_the_block():
    meter = builtin_profile("sdm630")
    block = profile_reads(meter)[0]
    words = [0] * block.count
    words[0:2] = encode_value(230.0, point=meter.register("voltage_l1"))
    words[0x46:0x48] = encode_value(50.0, point=meter.register("frequency"))
    values = decode_block(words, block=block, registers=meter.registers)
    assert values["voltage_l1"] == 230.0
    assert values["frequency"] == 50.0
    assert "total_energy" not in values  # lives in the second block


# -- built-in profiles ---------------------------------------------------------------------------


def test_builtin_profiles_cover_every_kind():
    kinds = {builtin_profile(m).kind for m in builtin_models()}
    assert kinds == set(DeviceKind)


@pytest.mark.parametrize("model", builtin_models())
def test_builtin_registers_carry_catalogue_metrics(model):
    profile = builtin_profile(model)
    assert all(is_metric(profile.kind, reg.metric) for reg in profile.registers)


def test_sdm630_uses_the_public_addresses():
    meter = builtin_profile("sdm630")
    expected = {
        "voltage_l1": 0x00, "voltage_l2": 0x02, "voltage_l3": 0x04,
        "current_l1": 0x06, "current_l2": 0x08, "current_l3": 0x0A,
        "power_l1": 0x0C, "power_l2": 0x0E, "power_l3": 0x10,
        "power_total": 0x34, "frequency": 0x46, "import_energy": 0x48,
        "export_energy": 0x4A, "total_energy": 0x156,
    }  # fmt: skip
    for name, address in expected.items():
        reg = meter.register(name)
        assert (reg.table, reg.address, reg.type) == (Table.INPUT, address, DataType.FLOAT32)
        assert (reg.byte_order, reg.word_order) == (Order.BIG, Order.BIG)


def test_lift_controller_takes_lockout_and_release_on_the_out_of_service_register():
    lift = builtin_profile("lift-controller")
    lockout, release = lift.command("lockout"), lift.command("release")
    assert (lockout.table, lockout.address, lockout.value) == (Table.HOLDING, 0x0100, 1)
    assert (release.table, release.address, release.value) == (Table.HOLDING, 0x0100, 0)


def test_light_dim_command_writes_the_writable_dim_register():
    pole = builtin_profile("street-light")
    dim, reg = pole.command("dim"), pole.register("dim_level")
    assert reg.writable and (dim.table, dim.address) == (reg.table, reg.address)
    assert dim.value is None and (dim.min, dim.max) == (0, 100)


def test_high_mast_has_a_state_and_power_per_lamp():
    mast = builtin_profile("high-mast-8")
    for n in range(1, 9):
        assert mast.register(f"lamp_{n}_on").table is Table.DISCRETE_INPUT
        assert mast.register(f"lamp_{n}_power").table is Table.INPUT


# -- validation errors name file, line and key ---------------------------------------------------

GOOD = """\
model = "test-meter"
kind = "energy_meter"

[[registers]]
metric = "voltage_l1"
table = 4
address = 0
type = "float32"

[[registers]]
metric = "frequency"
table = 4
address = 2
type = "float32"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "test-meter.toml"
    path.write_text(text)
    return path


def test_a_good_profile_loads(tmp_path):
    profile = load_profile(write(tmp_path, GOOD))
    assert profile.metrics == ["voltage_l1", "frequency"]


@pytest.mark.parametrize(
    ("old", "new", "line", "key", "reason"),
    [
        (
            'type = "float32"\n\n[[registers]]\nmetric = "freq',
            'type = "float33"\n\n[[registers]]\nmetric = "freq',
            8,
            "registers[0].type",
            "float32",
        ),
        ("address = 2", "address = 1", 13, "registers[1].address", "overlaps registers[0]"),
        ("address = 2", "address = 70000", 13, "registers[1].address", "less than or equal"),
        ("address = 2", "address = 65535", 13, "registers[1].address", "runs past 0xFFFF"),
        ('"frequency"', '"frequencey"', 11, "registers[1].metric", "not a energy_meter metric"),
        ("table = 4\naddress = 2", "table = 2\naddress = 2", 14, "registers[1].type", "bits"),
        ("address = 2\n", "address = 2\nlength = 4\n", 14, "registers[1].length", "only strings"),
        ("address = 2\n", 'address = 2\nunit = "kHz"\n', 14, "registers[1].unit", "'Hz'"),
        ("address = 2\n", "address = 2\nwritable = true\n", 14, "registers[1].writable", "INPUT"),
        ("address = 2\n", "address = 2\nscale = 0\n", 14, "registers[1].scale", "non-zero"),
        ("address = 2\n", "address = 2\nmin = 5\nmax = 1\n", 14, "registers[1].min", "above max"),
        ("address = 2\n", "address = 2\nadress = 3\n", 14, "registers[1].adress", "unknown key"),
        ('kind = "energy_meter"', 'kind = "toaster"', 2, "kind", "elevator"),
    ],
)
def test_profile_errors_name_file_line_and_key(tmp_path, old, new, line, key, reason):
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(ConfigError) as caught:
        load_profile(path)
    error = caught.value
    assert (error.source, error.key, error.line) == (str(path), key, line)
    assert reason in error.reason
    assert str(error).startswith(f"{path}:{line}: key '{key}'")


def test_a_command_may_not_write_a_read_only_register(tmp_path):
    text = GOOD + '\n[[commands]]\naction = "dim"\ntable = 4\naddress = 0\n'
    with pytest.raises(ConfigError) as caught:
        load_profile(write(tmp_path, text))
    assert (caught.value.key, caught.value.line) == ("commands[0].table", 18)


def test_a_command_over_a_read_only_register_is_refused():
    data = {
        "model": "p",
        "kind": "light_pole",
        "registers": [{"metric": "dim_level", "table": 3, "address": 0}],
        "commands": [{"action": "dim", "table": 3, "address": 0}],
    }
    with pytest.raises(ConfigError, match=r"commands\[0\].address.*read-only"):
        parse_profile(data)
    data["registers"][0]["writable"] = True
    assert parse_profile(data).command("dim").address == 0


def test_a_string_cannot_be_a_metric():
    data = {
        "model": "p",
        "kind": "light_pole",
        "registers": [{"metric": "lux", "table": 4, "address": 0, "type": "string", "length": 4}],
    }
    with pytest.raises(ConfigError, match=r"registers\[0\].type.*identity"):
        parse_profile(data)


def test_identity_string_overlapping_a_register_is_refused():
    data = {
        "model": "p",
        "kind": "light_pole",
        "registers": [{"metric": "lux", "table": 3, "address": 4, "type": "float32"}],
        "identity": [{"name": "serial", "table": 3, "address": 0, "type": "string", "length": 10}],
    }
    with pytest.raises(ConfigError, match=r"identity\[0\].address.*overlaps registers\[0\]"):
        parse_profile(data)


def test_a_register_is_a_pydantic_model_with_its_width():
    reg = Register(metric="floor", table=Table.INPUT, address=4, type=DataType.FLOAT64)
    assert (reg.count, reg.end) == (4, 8)


def test_a_generated_mast_map_extends_the_shipped_one():
    assert high_mast_profile(lamps=8) == builtin_profile("high-mast-8")
    twelve = builtin_profile("high-mast-12")
    assert twelve.register("lamp_12_on").address == 12
    assert twelve.register("lamp_12_power").address == 0x001B
    with pytest.raises(KeyError):
        builtin_profile("high-mast-65")
    with pytest.raises(ValueError, match=r"1\.\.64"):
        high_mast_profile(lamps=0)
