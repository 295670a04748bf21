"""Declarative per-source mappings (TOML in ``ingest/formats/mappings/``) as typed pydantic models.

A mapping says which field is the device (or which one device a single-device file is from), which is
the event time (and how to read it), which fields are metrics in which unit, and which constant tags to
add. It is checked once at load time, with messages that name the key and the allowed values.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping as AnyMapping
from datetime import date
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ingest.formats.units import canonical_unit

MAPPINGS_DIR = Path(__file__).parent / "mappings"

TimeFormat = Literal["iso", "epoch_s", "epoch_ms", "time_of_day"]
FileFormat = Literal["csv", "jsonl", "parquet"]
# Reading fields a mapping can set to one constant for every row (each also has a ``<name>_field``).
CONSTANT_KEYS = ("device", "site", "region")
_MAX_CONSTANT = 256  # the longest text a Reading accepts


class MetricSpec(BaseModel):
    """One source field that carries a metric value."""

    model_config = ConfigDict(extra="forbid")

    field: str = Field(description="source field; dotted path for nested JSON, e.g. padrao.leitura.temperatura")
    metric: str = Field(description="canonical metric name, e.g. temperature")
    unit: str = Field(description="the unit the SOURCE uses; normalised via ingest.formats.units")
    required: bool = Field(default=False, description="a row without it goes to the dead-letter topic")

    @field_validator("unit")
    @classmethod
    def _known_unit(cls, unit: str) -> str:
        canonical_unit(unit)
        return unit


class Mapping(BaseModel):
    """How rows of one source format become canonical readings."""

    model_config = ConfigDict(extra="forbid")

    name: str
    source: str = Field(description="Reading.source: the data source, the same whatever transport carried it")
    format: FileFormat = Field(description="file format for the history loader / replay; TCP always reads JSON")
    description: str = ""
    encoding: str = "utf-8-sig"
    device_field: str | None = Field(default=None, description="source field holding the device id")
    device: str = Field(default="", description="one constant device id for every row (a single-device file), "
                                                "instead of device_field; taken as it is (no device_prefix)")
    device_prefix: str = ""
    time_field: str
    time_format: TimeFormat = "iso"
    time_zone: str = Field(default="UTC", description="zone for times without an offset")
    base_date: date | None = Field(default=None, description="date for time_format=time_of_day")
    region: str = ""
    site: str = ""
    region_field: str | None = None
    site_field: str | None = None
    metrics: list[MetricSpec]
    id_fields: list[str] = Field(
        default_factory=list,
        description="extra source fields that make an event unique beyond device+time+metric",
    )
    ignore_fields: list[str] = Field(default_factory=list, description="known fields that are not metrics")

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, zone: str) -> str:
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            msg = f"time_zone {zone!r} is not an IANA zone name such as 'UTC' or 'Asia/Kolkata'"
            raise ValueError(msg) from exc
        return zone

    @field_validator(*CONSTANT_KEYS)
    @classmethod
    def _constant(cls, value: str, info: ValidationInfo) -> str:
        if value != value.strip() or len(value) > _MAX_CONSTANT:
            msg = (f"{info.field_name} {value!r:.80} must have no leading or trailing blanks and at most "
                   f"{_MAX_CONSTANT} characters")
            raise ValueError(msg)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Mapping:
        if self.device_field and self.device:
            msg = (f"give device_field (the field with the device id) or device (one id for every row), not both: "
                   f"device_field={self.device_field!r}, device={self.device!r}")
            raise ValueError(msg)
        if not self.device_field and not self.device:
            msg = ("no device: set device_field to the field holding the device id, or device = \"<id>\" for a file "
                   "of one device (or pass the constant at load time, e.g. ingest history --set device=pump-7)")
            raise ValueError(msg)
        if self.time_format == "time_of_day" and self.base_date is None:
            msg = "time_format 'time_of_day' needs base_date (YYYY-MM-DD): the source carries no date"
            raise ValueError(msg)
        if not self.metrics:
            msg = "metrics must list at least one field"
            raise ValueError(msg)
        names = [m.metric for m in self.metrics]
        if len(set(names)) != len(names):
            msg = f"metric names must be unique, got {names}"
            raise ValueError(msg)
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)

    def known_top_fields(self) -> set[str]:
        """Top-level field names the mapping uses or deliberately ignores."""
        paths = [self.time_field, *self.id_fields, *self.ignore_fields, *(m.field for m in self.metrics)]
        paths += [p for p in (self.device_field, self.region_field, self.site_field) if p]
        return {p.split(".", 1)[0] for p in paths} | set(paths)

    def constants(self) -> dict[str, str]:
        """The constant reading fields in force: device (when there is no device field), site, region."""
        return {key: getattr(self, key) for key in CONSTANT_KEYS
                if getattr(self, key) and not getattr(self, f"{key}_field")}

    def with_constants(self, constants: AnyMapping[str, str]) -> Mapping:
        """This mapping with ``device``/``site``/``region`` set to one value for every row.

        A constant replaces the field it stands for (``device=pump-7`` drops ``device_field``): every row
        then carries that value, whatever the file says. ValueError names an unknown key or a bad value.
        """
        try:
            return Mapping.model_validate(_with_constants(self.model_dump(), constants))
        except ValidationError as exc:
            msg = f"mapping {self.name} with constants {dict(constants)}: {exc}"
            raise ValueError(msg) from exc


def _with_constants(data: dict[str, object], constants: AnyMapping[str, str]) -> dict[str, object]:
    """Mapping data with the constants put in (each one's ``*_field`` dropped); ValueError for a bad one."""
    unknown = sorted(set(constants) - set(CONSTANT_KEYS))
    if unknown:
        msg = f"constant {unknown[0]!r} is not a field a mapping can set; allowed: {', '.join(CONSTANT_KEYS)}"
        raise ValueError(msg)
    data = dict(data)
    for key, value in constants.items():
        if not isinstance(value, str) or not value.strip():
            msg = f"constant {key} must be a non-empty string, got {value!r}"
            raise ValueError(msg)
        data[key], data[f"{key}_field"] = value, None
    return data


def mapping_names() -> list[str]:
    """Names of the mappings shipped with machinewatch."""
    return sorted(p.stem for p in MAPPINGS_DIR.glob("*.toml"))


def load_mapping(name_or_path: str | Path, constants: AnyMapping[str, str] | None = None,
                 **overrides: object) -> Mapping:
    """A shipped mapping by name (``equipment``) or a TOML file by path; overrides replace top-level keys,
    ``constants`` set device/site/region for every row (``Mapping.with_constants``)."""
    path = Path(name_or_path)
    if not path.suffix:
        path = MAPPINGS_DIR / f"{name_or_path}.toml"
    if not path.exists():
        msg = f"mapping {str(name_or_path)!r} not found; shipped mappings: {', '.join(mapping_names())}"
        raise ValueError(msg)
    with path.open("rb") as handle:
        data = tomllib.load(handle)
    data.update({k: v for k, v in overrides.items() if v is not None})
    if constants:
        # Before validation: a mapping of a single-device file may name no device at all and get it here.
        data = _with_constants(data, constants)
    try:
        return Mapping.model_validate(data)
    except ValidationError as exc:
        msg = f"mapping {path}: {exc}"
        raise ValueError(msg) from exc
