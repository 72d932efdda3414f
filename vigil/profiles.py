"""Device register maps: one source of truth for the simulators (encode) and the gateway (decode).

A profile (``vigil/profiles/<model>.toml``) names a device model, its kind, and every register
the gateway reads: which table (coil 1, discrete input 2, holding 3, input 4; the number is the
Modbus read function code), address, data type, byte and word order, scale, the catalogue metric
it carries, its valid range and whether it is writable. It also names the registers that carry
commands (lockout, release, dim) and optional identity registers (serial number, firmware).

The codec (``encode_value`` / ``decode_value``) turns an engineering value into register words
and back; ``block_reads`` merges the registers into as few Modbus requests as possible.
docs/register-maps.md documents every built-in profile.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Iterable, Mapping, Sequence
from enum import IntEnum, StrEnum
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import Field, ValidationError

from vigil.catalog import DeviceKind, metric
from vigil.config import ConfigError, Section, load_file, locate, read_toml
from vigil.wire import ID_PATTERN, CommandAction

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"
MAX_REGISTERS_PER_READ = 125  # Modbus limit for functions 03/04
MAX_BITS_PER_READ = 2000  # Modbus limit for functions 01/02
LAST_ADDRESS = 0xFFFF


class Table(IntEnum):
    """A Modbus data table; the value is the function code that reads it."""

    COIL = 1
    DISCRETE_INPUT = 2
    HOLDING = 3
    INPUT = 4

    @property
    def is_bits(self) -> bool:
        """True for the one-bit tables (coils and discrete inputs)."""
        return self in (Table.COIL, Table.DISCRETE_INPUT)

    @property
    def is_writable(self) -> bool:
        """True for the tables a client may write (coils and holding registers)."""
        return self in (Table.COIL, Table.HOLDING)


class DataType(StrEnum):
    """How a value is laid out in registers."""

    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    BITS = "bits"  # one coil or discrete input
    STRING = "string"  # ``length`` bytes, two per register, NUL-padded ASCII


class Order(StrEnum):
    """Byte order inside a register, or word order across registers."""

    BIG = "big"
    LITTLE = "little"


# struct format (big-endian) and register count of each fixed-size numeric type
_NUMERIC: dict[DataType, tuple[str, int]] = {
    DataType.INT16: (">h", 1),
    DataType.UINT16: (">H", 1),
    DataType.INT32: (">i", 2),
    DataType.UINT32: (">I", 2),
    DataType.FLOAT32: (">f", 2),
    DataType.FLOAT64: (">d", 4),
}
_INTEGER_RANGE: dict[DataType, tuple[int, int]] = {
    DataType.INT16: (-(2**15), 2**15 - 1),
    DataType.UINT16: (0, 2**16 - 1),
    DataType.INT32: (-(2**31), 2**31 - 1),
    DataType.UINT32: (0, 2**32 - 1),
}


class Point(Section):
    """Where a value lives and how it is encoded."""

    table: Table
    address: int = Field(ge=0, le=LAST_ADDRESS)
    type: DataType = DataType.UINT16
    length: int | None = Field(default=None, ge=1, le=250, description="string length in bytes")
    byte_order: Order = Order.BIG
    word_order: Order = Order.BIG
    scale: float = Field(default=1.0, description="engineering value = raw value x scale")
    description: str = ""

    @property
    def count(self) -> int:
        """How many registers (or bits) the value occupies."""
        return point_size(self)

    @property
    def end(self) -> int:
        """First address after the value."""
        return self.address + self.count


class Register(Point):
    """A register that carries one catalogue metric."""

    metric: str
    unit: str | None = Field(default=None, description="defaults to the catalogue unit")
    min: float | None = Field(default=None, description="values below are flagged, not good")
    max: float | None = Field(default=None, description="values above are flagged, not good")
    writable: bool = False

    @property
    def wraps_at(self) -> float | None:
        """Where a counter in this register rolls over (rule E4): its declared maximum, or the
        largest value its width holds for an unsigned integer; None for the others."""
        if self.max is not None:
            return self.max
        bits = _UNSIGNED_BITS.get(self.type)
        return (2**bits - 1) * self.scale if bits else None


_UNSIGNED_BITS = {DataType.UINT16: 16, DataType.UINT32: 32}


class Identity(Point):
    """A register read once for identification (serial number, firmware); not telemetry."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")


class CommandPoint(Point):
    """Where a platform command is written: a fixed ``value``, or the command's own value."""

    action: CommandAction
    value: float | None = Field(default=None, description="fixed value; None takes the command's")
    min: float | None = None
    max: float | None = None


class Profile(Section):
    """The register map of one device model."""

    model: str = Field(pattern=ID_PATTERN.pattern)
    kind: DeviceKind
    vendor: str = ""
    description: str = ""
    max_gap: int = Field(
        default=0, ge=0, le=MAX_REGISTERS_PER_READ, description="unmapped words a read may span"
    )
    registers: list[Register] = Field(min_length=1)
    commands: list[CommandPoint] = []
    identity: list[Identity] = []

    def register(self, metric_name: str) -> Register:
        """The register carrying ``metric_name`` (KeyError when the model has none)."""
        for reg in self.registers:
            if reg.metric == metric_name:
                return reg
        raise KeyError(f"{self.model} has no register for metric {metric_name!r}")

    def command(self, action: CommandAction | str) -> CommandPoint:
        """Where ``action`` is written (KeyError when the model does not take it)."""
        for point in self.commands:
            if point.action == action:
                return point
        raise KeyError(f"{self.model} does not take the command {action!r}")

    @property
    def metrics(self) -> list[str]:
        """Metric names in register order."""
        return [reg.metric for reg in self.registers]


class Block(NamedTuple):
    """One read request: ``count`` registers (or bits) of ``table`` from ``start``."""

    table: Table
    start: int
    count: int

    @property
    def end(self) -> int:
        """First address after the block."""
        return self.start + self.count


# -- codec --------------------------------------------------------------------------------------


def point_size(point: Point) -> int:
    """Registers (or bits) a point occupies."""
    if point.type is DataType.BITS:
        return 1
    if point.type is DataType.STRING:
        return math.ceil((point.length or 0) / 2)
    return _NUMERIC[point.type][1]


def encode_value(value: float | str, *, point: Point) -> list[int]:
    """Register words (or 0/1 bits) holding ``value`` as ``point`` lays it out."""
    if point.type is DataType.BITS:
        return [1 if value else 0]
    if point.type is DataType.STRING:
        return _words_from_bytes(_string_bytes(str(value), length=point.length or 0), point=point)
    fmt, _ = _NUMERIC[point.type]
    raw = float(value) / point.scale
    if point.type in _INTEGER_RANGE:
        raw = round(raw)
        low, high = _INTEGER_RANGE[point.type]
        if not low <= raw <= high:
            raise ValueError(f"{value!r} does not fit {point.type} with scale {point.scale}")
    elif not math.isfinite(raw) and math.isfinite(float(value)):
        raise ValueError(f"{value!r} does not fit {point.type} with scale {point.scale}")
    try:
        packed = struct.pack(fmt, raw)
    except (struct.error, OverflowError):
        raise ValueError(f"{value!r} does not fit {point.type}") from None
    return _words_from_bytes(packed, point=point)


def decode_value(words: Sequence[int | bool], *, point: Point) -> float | str:
    """The engineering value in ``words`` (exactly ``point.count`` of them)."""
    if len(words) != point.count:
        raise ValueError(f"{point.type} at {point.address} needs {point.count} words")
    if point.type is DataType.BITS:
        return 1.0 if words[0] else 0.0
    data = _bytes_from_words(words, point=point)
    if point.type is DataType.STRING:
        return data.split(b"\0", 1)[0].decode("ascii", errors="replace")
    (raw,) = struct.unpack(_NUMERIC[point.type][0], data)
    return raw * point.scale if point.scale != 1.0 else float(raw)


def _string_bytes(text: str, *, length: int) -> bytes:
    data = text.encode("ascii")
    if len(data) > length:
        raise ValueError(f"{text!r} is longer than {length} bytes")
    return data.ljust(2 * math.ceil(length / 2), b"\0")


def _words_from_bytes(data: bytes, *, point: Point) -> list[int]:
    words = [data[i : i + 2] for i in range(0, len(data), 2)]
    return [int.from_bytes(w, _byte_order(point)) for w in _in_word_order(words, point=point)]


def _bytes_from_words(words: Sequence[int | bool], *, point: Point) -> bytes:
    chunks = [int(w).to_bytes(2, _byte_order(point)) for w in words]
    return b"".join(_in_word_order(chunks, point=point))


def _byte_order(point: Point) -> Any:
    return "little" if point.byte_order is Order.LITTLE else "big"


def _in_word_order(words: list[Any], *, point: Point) -> list[Any]:
    # Strings are never word-swapped: word order only applies to multi-register numbers.
    if point.word_order is Order.LITTLE and point.type is not DataType.STRING:
        return words[::-1]
    return words


def in_range(value: float, *, register: Register) -> bool:
    """True when ``value`` lies in the register's declared valid range."""
    if register.min is not None and value < register.min:
        return False
    return not (register.max is not None and value > register.max)


# -- reads --------------------------------------------------------------------------------------


def block_reads(
    points: Iterable[Point],
    *,
    max_gap: int = 0,
    max_registers: int = MAX_REGISTERS_PER_READ,
    max_bits: int = MAX_BITS_PER_READ,
) -> list[Block]:
    """The fewest read requests covering ``points``, spanning at most ``max_gap`` unmapped words."""
    blocks: list[Block] = []
    for table in Table:
        limit = max_bits if table.is_bits else max_registers
        current: Block | None = None
        for point in sorted((p for p in points if p.table is table), key=lambda p: p.address):
            if point.count > limit:
                raise ValueError(f"{point.type} at {point.address} is longer than one read")
            if (
                current is not None
                and point.address - current.end <= max_gap
                and max(point.end, current.end) - current.start <= limit
            ):
                current = Block(table, current.start, max(point.end, current.end) - current.start)
                continue
            if current is not None:
                blocks.append(current)
            current = Block(table, point.address, point.count)
        if current is not None:
            blocks.append(current)
    return blocks


def profile_reads(profile: Profile, **limits: int) -> list[Block]:
    """Block reads covering every metric register of ``profile`` (honours its ``max_gap``)."""
    limits.setdefault("max_gap", profile.max_gap)
    return block_reads(profile.registers, **limits)


def decode_block(
    words: Sequence[int | bool], *, block: Block, registers: Iterable[Register]
) -> dict[str, float]:
    """Metric values of the ``registers`` that lie wholly inside ``block`` (read as ``words``)."""
    values: dict[str, float] = {}
    for reg in registers:
        if reg.table is block.table and block.start <= reg.address and reg.end <= block.end:
            offset = reg.address - block.start
            values[reg.metric] = float(decode_value(words[offset : offset + reg.count], point=reg))
    return values


# -- loading and validation ---------------------------------------------------------------------


def load_profile(path: str | Path) -> Profile:
    """Load and validate a profile file; a problem raises ConfigError naming file, line and key."""
    path = Path(path)
    profile = load_file(path, Profile)
    problem = profile_problem(profile)
    if problem is not None:
        loc, reason = problem
        _, text = read_toml(path)
        raise ConfigError(source=str(path), key=_dotted(loc), reason=reason, line=locate(text, loc))
    return profile


def parse_profile(data: Mapping[str, Any], *, source: str = "<profile>") -> Profile:
    """Validate a profile given as a mapping (tests, generated profiles); errors name the key."""
    try:
        profile = Profile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        reason = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        raise ConfigError(source=source, key=_dotted(first["loc"]), reason=reason) from None
    problem = profile_problem(profile)
    if problem is not None:
        raise ConfigError(source=source, key=_dotted(problem[0]), reason=problem[1])
    return profile


def builtin_models() -> list[str]:
    """Model names of the profiles shipped in ``vigil/profiles/``."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


@cache
def builtin_profile(model: str) -> Profile:
    """A shipped profile by model name (cached: profiles are immutable in use).

    ``high-mast-N`` (1 <= N <= 64) is the ``high-mast-8`` map with N lamps.
    """
    path = PROFILE_DIR / f"{model}.toml"
    if path.exists():
        return load_profile(path)
    found = re.fullmatch(r"high-mast-([1-9][0-9]?)", model)
    if found and int(found.group(1)) <= MAX_MAST_LAMPS:
        return high_mast_profile(lamps=int(found.group(1)))
    raise KeyError(f"no built-in profile {model!r}; have {', '.join(builtin_models())}")


MAX_MAST_LAMPS = 64
_MAST_LAMP_POWER_BASE = 0x0010


def high_mast_profile(*, lamps: int) -> Profile:
    """The high-mast map with ``lamps`` lamps: lamp n is discrete input n, its power 0x0010+n-1."""
    if not 1 <= lamps <= MAX_MAST_LAMPS:
        raise ValueError(f"a mast has 1..{MAX_MAST_LAMPS} lamps")
    base = load_profile(PROFILE_DIR / "high-mast-8.toml")
    shared = [r for r in base.registers if not _is_lamp_metric(r.metric)]
    on = base.register("lamp_1_on")
    power = base.register("lamp_1_power")
    per_lamp = []
    for n in range(1, lamps + 1):
        per_lamp.append(
            on.model_copy(
                update={
                    "metric": f"lamp_{n}_on",
                    "address": n,
                    "description": f"1 when lamp {n} is lit (draws power)",
                }
            )
        )
    for n in range(1, lamps + 1):
        per_lamp.append(
            power.model_copy(
                update={
                    "metric": f"lamp_{n}_power",
                    "address": _MAST_LAMP_POWER_BASE + n - 1,
                    "description": f"Power of lamp {n}, 0.1 W resolution",
                }
            )
        )
    return parse_profile(
        {
            **base.model_dump(exclude={"registers", "model", "description"}),
            "model": f"high-mast-{lamps}",
            "description": f"High mast, {lamps} lamps on one controller, photocell and dimming",
            "registers": [r.model_dump() for r in [*shared, *per_lamp]],
        },
        source=f"high-mast-{lamps}",
    )


def _is_lamp_metric(name: str) -> bool:
    parts = name.split("_")
    return len(parts) == 3 and parts[0] == "lamp" and parts[1].isdigit()


def profile_problem(profile: Profile) -> tuple[tuple[Any, ...], str] | None:
    """The first problem the schema cannot see (catalogue, overlaps, layout), or None."""
    occupied: dict[Table, list[tuple[int, int, tuple[Any, ...]]]] = {t: [] for t in Table}
    for section, points in (("registers", profile.registers), ("identity", profile.identity)):
        for index, point in enumerate(points):
            loc = (section, index)
            problem = _layout_problem(point, loc=loc) or (
                _register_problem(point, kind=profile.kind, loc=loc)
                if isinstance(point, Register)
                else None
            )
            if problem:
                return problem
            for start, end, other in occupied[point.table]:
                if point.address < end and start < point.end:
                    where = _dotted(other)
                    return (*loc, "address"), f"overlaps {where} in table {point.table.name}"
            occupied[point.table].append((point.address, point.end, loc))
    seen: set[CommandAction] = set()
    for index, command in enumerate(profile.commands):
        loc = ("commands", index)
        problem = _layout_problem(command, loc=loc) or _command_problem(
            command, profile=profile, loc=loc
        )
        if problem:
            return problem
        if command.action in seen:
            return (*loc, "action"), f"a second entry for {command.action}"
        seen.add(command.action)
    return None


def _layout_problem(point: Point, *, loc: tuple[Any, ...]) -> tuple[tuple[Any, ...], str] | None:
    if point.table.is_bits != (point.type is DataType.BITS):
        reason = "coils and discrete inputs hold type 'bits' only; 'bits' lives only there"
        return (*loc, "type"), reason
    if point.type is DataType.STRING and point.length is None:
        return (*loc, "length"), "a string needs a length (bytes)"
    if point.type is not DataType.STRING and point.length is not None:
        return (*loc, "length"), "only strings have a length"
    if point.end - 1 > LAST_ADDRESS:
        return (*loc, "address"), f"{point.type} at {point.address} runs past 0xFFFF"
    if point.scale == 0 or not math.isfinite(point.scale):
        return (*loc, "scale"), "scale must be a finite, non-zero number"
    return None


def _register_problem(
    reg: Register, *, kind: DeviceKind, loc: tuple[Any, ...]
) -> tuple[tuple[Any, ...], str] | None:
    known = metric(kind, reg.metric)
    if known is None:
        return (*loc, "metric"), f"{reg.metric!r} is not a {kind} metric in vigil.catalog"
    if reg.type is DataType.STRING:
        return (*loc, "type"), "a metric is a number; strings belong in [[identity]]"
    if reg.unit is not None and reg.unit != known.unit:
        return (*loc, "unit"), f"the catalogue unit of {reg.metric} is {known.unit!r}"
    if reg.writable and not reg.table.is_writable:
        return (*loc, "writable"), f"table {reg.table.name} cannot be written"
    if reg.min is not None and reg.max is not None and reg.min > reg.max:
        return (*loc, "min"), "min is above max"
    return None


def _command_problem(
    command: CommandPoint, *, profile: Profile, loc: tuple[Any, ...]
) -> tuple[tuple[Any, ...], str] | None:
    if not command.table.is_writable:
        return (*loc, "table"), f"table {command.table.name} cannot be written"
    for reg in profile.registers:
        same_table = reg.table is command.table
        if same_table and command.address < reg.end and reg.address < command.end:
            if not reg.writable or reg.address != command.address or reg.type != command.type:
                return (*loc, "address"), f"overlaps read-only or differently typed {reg.metric}"
    if command.value is not None:
        try:
            encode_value(command.value, point=command)
        except ValueError as exc:
            return (*loc, "value"), str(exc)
    return None


def _dotted(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def markdown_table(profile: Profile) -> str:
    """The register map of ``profile`` as the Markdown table in docs/register-maps.md."""
    rows = [
        "| metric | table (fn) | address | type | bytes/words | scale | unit | range | rw "
        "| meaning |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for reg in profile.registers:
        unit = reg.unit if reg.unit is not None else _catalogue_unit(profile.kind, reg.metric)
        rows.append(
            f"| `{reg.metric}` | {_table_cell(reg)} | {_address_cell(reg)} | {_type_cell(reg)} "
            f"| {_order_cell(reg)} | {reg.scale:g} | {unit or '-'} | {_range_cell(reg)} "
            f"| {'rw' if reg.writable else 'r'} | {reg.description} |"
        )
    for point in profile.identity:
        rows.append(
            f"| identity `{point.name}` | {_table_cell(point)} | {_address_cell(point)} "
            f"| {_type_cell(point)} | {_order_cell(point)} | - | - | - | r | {point.description} |"
        )
    for command in profile.commands:
        value = "command value" if command.value is None else f"{command.value:g}"
        bounds = _bounds(command.min, command.max)
        rows.append(
            f"| command `{command.action}` | {_table_cell(command)} | {_address_cell(command)} "
            f"| {_type_cell(command)} | {_order_cell(command)} | {command.scale:g} | - "
            f"| {bounds} | w | writes {value}: {command.description} |"
        )
    return "\n".join(rows) + "\n"


def _catalogue_unit(kind: DeviceKind, name: str) -> str:
    known = metric(kind, name)
    return known.unit if known else ""


def _table_cell(point: Point) -> str:
    names = {
        Table.COIL: "coil",
        Table.DISCRETE_INPUT: "discrete input",
        Table.HOLDING: "holding",
        Table.INPUT: "input",
    }
    return f"{names[point.table]} ({point.table.value:02d})"


def _address_cell(point: Point) -> str:
    if point.count == 1:
        return f"0x{point.address:04X}"
    return f"0x{point.address:04X}-0x{point.end - 1:04X}"


def _type_cell(point: Point) -> str:
    return f"string[{point.length}]" if point.type is DataType.STRING else str(point.type)


def _order_cell(point: Point) -> str:
    if point.type is DataType.BITS:
        return "-"
    if point.count == 1 or point.type is DataType.STRING:
        return f"{point.byte_order}/-"
    return f"{point.byte_order}/{point.word_order}"


def _range_cell(reg: Register) -> str:
    return _bounds(reg.min, reg.max)


def _bounds(low: float | None, high: float | None) -> str:
    if low is None and high is None:
        return "-"
    return f"{'' if low is None else f'{low:g}'}..{'' if high is None else f'{high:g}'}"
