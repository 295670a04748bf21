"""MTConnect documents (probe, streams, error) parsed safely into plain Python objects.

Format only, no transport: the poller and the streaming reader hand bytes here. Parsing refuses
DTDs, entity declarations and external references (defusedxml) and bodies over a size cap, and it
tolerates what real agents send: Streams/Devices 1.x-2.x or no namespace, timestamps without ``Z``,
headers missing or disagreeing, duplicate data item ids. Observations that cannot be read come
back beside the good ones as ``BadObservation`` (errors are data), never as an exception.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as StdET
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import defusedxml
import defusedxml.ElementTree as SafeET

DEFAULT_MAX_BYTES = 8 * 1024 * 1024
CATEGORIES = {"Samples": "SAMPLE", "Events": "EVENT", "Condition": "CONDITION"}
CONDITION_LEVELS = {"Normal": "NORMAL", "Warning": "WARNING", "Fault": "FAULT", "Unavailable": "UNAVAILABLE"}
_NS = re.compile(r"^urn:mtconnect\.org:MTConnect(Streams|Devices|Error):([12])\.(\d+)$")

# MTConnect unit names -> the short units machinewatch readings carry.
UNITS = {
    "CELSIUS": "°C", "FAHRENHEIT": "°F", "KELVIN": "K",
    "REVOLUTION/MINUTE": "rpm", "REVOLUTION/SECOND": "rev/s",
    "MILLIMETER": "mm", "MILLIMETER/SECOND": "mm/s", "MILLIMETER/SECOND^2": "mm/s²",
    "MILLIMETER/MINUTE": "mm/min", "MILLIMETER_3D": "mm", "MICROMETER": "µm", "METER": "m",
    "INCH": "in", "INCH/MINUTE": "in/min", "FOOT": "ft",
    "DEGREE": "°", "DEGREE/SECOND": "°/s", "DEGREE/SECOND^2": "°/s²", "DEGREE_3D": "°", "RADIAN": "rad",
    "PERCENT": "%", "SECOND": "s", "MILLISECOND": "ms", "MINUTE": "min", "HOUR": "h",
    "AMPERE": "A", "VOLT": "V", "WATT": "W", "KILOWATT": "kW", "WATT_SECOND": "Ws", "KILOWATT_HOUR": "kWh",
    "HERTZ": "Hz", "NEWTON": "N", "NEWTON_METER": "N·m", "PASCAL": "Pa", "KILOPASCAL": "kPa", "BAR": "bar",
    "GRAM": "g", "KILOGRAM": "kg", "LITER": "L", "LITER/SECOND": "L/s", "LITER/MINUTE": "L/min",
    "CUBIC_MILLIMETER": "mm³", "COUNT": "count", "COUNT/SECOND": "count/s", "MILLIMETER/REVOLUTION": "mm/rev",
    "VOLT_AMPERE": "VA", "VOLT_AMPERE_REACTIVE": "var", "OHM": "Ω", "SIEMENS/METER": "S/m",
    "PH": "pH", "DECIBEL": "dB", "LUX": "lx", "GRAVITATIONAL_ACCELERATION": "g0",
}


class MTConnectParseError(ValueError):
    """A document that must not or cannot be parsed; the message says which rule it broke."""


def normalise_unit(units: str | None) -> str:
    """The short unit for an MTConnect unit name (unknown names are kept as they are)."""
    if not units:
        return ""
    return UNITS.get(units.strip().upper(), units.strip())


def parse_timestamp_ms(text: str | None) -> int:
    """Epoch ms of an MTConnect timestamp; one without a zone is UTC, as the standard says it must be."""
    if not text:
        msg = "timestamp is missing"
        raise MTConnectParseError(msg)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        msg = f"timestamp {text!r} is not ISO 8601"
        raise MTConnectParseError(msg) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return round(moment.timestamp() * 1000)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _namespace(tag: str) -> str:
    return tag[1:].split("}", 1)[0] if tag.startswith("{") else ""


def _int(value: str | None) -> int | None:
    if value is None or not value.strip():
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


def safe_root(data: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> StdET.Element:
    """Parse ``data`` with DTDs, entities and external references forbidden and a size cap."""
    if len(data) > max_bytes:
        msg = f"document of {len(data)} bytes is larger than the {max_bytes}-byte cap"
        raise MTConnectParseError(msg)
    try:
        # DTDs themselves are harmless to expat (it fetches nothing); entity declarations are what
        # expand (billion laughs) or read files/URLs (XXE), so those are refused with a precise reason.
        root: StdET.Element = SafeET.fromstring(data, forbid_dtd=False, forbid_entities=True,
                                                forbid_external=True)
    except defusedxml.EntitiesForbidden as exc:
        if exc.sysid or exc.pubid:
            msg = f"document declares external entity {exc.name!r} -> {exc.sysid or exc.pubid!r} (refused: XXE)"
        else:
            msg = f"document declares entity {exc.name!r} (refused: entity expansion)"
        raise MTConnectParseError(msg) from exc
    except defusedxml.ExternalReferenceForbidden as exc:
        msg = f"document references an external resource {exc.sysid!r} (refused)"
        raise MTConnectParseError(msg) from exc
    except defusedxml.DefusedXmlException as exc:
        msg = f"document refused by the safe parser: {exc}"
        raise MTConnectParseError(msg) from exc
    except StdET.ParseError as exc:
        msg = f"not well-formed XML: {exc}"
        raise MTConnectParseError(msg) from exc
    return root


def _check_root(root: StdET.Element, *expected: str) -> str:
    name = _local(root.tag)
    if name not in expected:
        msg = f"root element is <{name}>, expected {' or '.join('<' + e + '>' for e in expected)}"
        raise MTConnectParseError(msg)
    ns = _namespace(root.tag)
    # Sloppy agents omit the namespace; a namespace that is not MTConnect 1.x/2.x is refused.
    if ns and not _NS.match(ns):
        msg = f"namespace {ns!r} is not an MTConnect 1.x or 2.x namespace"
        raise MTConnectParseError(msg)
    return name


# --------------------------------------------------------------------------------------- probe


@dataclass(frozen=True, slots=True)
class DataItem:
    """One data item a device declares in /probe."""

    id: str
    name: str
    category: str
    type: str
    sub_type: str
    units: str
    native_units: str
    component: str

    @property
    def unit(self) -> str:
        return normalise_unit(self.units)


@dataclass(slots=True)
class DeviceInfo:
    name: str
    uuid: str
    id: str
    items: dict[str, DataItem] = field(default_factory=dict)


@dataclass(slots=True)
class Probe:
    instance_id: str
    version: str
    buffer_size: int | None
    devices: list[DeviceInfo]
    duplicate_ids: list[str] = field(default_factory=list)

    def item(self, device_key: str, item_id: str) -> DataItem | None:
        """Look a data item up by the device's name or uuid and the item's id."""
        for dev in self.devices:
            if device_key in (dev.name, dev.uuid):
                return dev.items.get(item_id)
        return None


def parse_probe(data: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> Probe:
    """Devices and their data items (units, types) from an MTConnectDevices document."""
    root = safe_root(data, max_bytes)
    if _check_root(root, "MTConnectDevices", "MTConnectError") == "MTConnectError":
        raise AgentError(parse_error_root(root))
    header = next((el for el in root if _local(el.tag) == "Header"), None)
    attrs: dict[str, str] = dict(header.attrib) if header is not None else {}
    devices: list[DeviceInfo] = []
    duplicates: list[str] = []
    for dev_el in root.iter():
        if _local(dev_el.tag) not in ("Device", "Agent"):
            continue
        dev = DeviceInfo(name=dev_el.get("name", ""), uuid=dev_el.get("uuid", ""), id=dev_el.get("id", ""))
        _collect_items(dev_el, dev, dev.name or dev.id, duplicates)
        devices.append(dev)
    return Probe(instance_id=attrs.get("instanceId", ""), version=attrs.get("version", ""),
                 buffer_size=_int(attrs.get("bufferSize")), devices=devices, duplicate_ids=duplicates)


def _collect_items(el: StdET.Element, dev: DeviceInfo, component: str, duplicates: list[str]) -> None:
    for child in el:
        tag = _local(child.tag)
        if tag == "DataItems":
            for item_el in child:
                if _local(item_el.tag) != "DataItem":
                    continue
                item_id = item_el.get("id", "")
                if not item_id:
                    continue
                if item_id in dev.items:
                    # Real probes repeat ids; the first declaration wins, the repeat is reported.
                    duplicates.append(item_id)
                    continue
                dev.items[item_id] = DataItem(
                    id=item_id, name=item_el.get("name", ""), category=item_el.get("category", "").upper(),
                    type=item_el.get("type", ""), sub_type=item_el.get("subType", ""),
                    units=item_el.get("units", ""), native_units=item_el.get("nativeUnits", ""),
                    component=component,
                )
        elif tag in ("Device", "Agent"):
            continue  # nested devices are handled as devices of their own
        else:
            _collect_items(child, dev, child.get("name") or child.get("id") or component, duplicates)


# --------------------------------------------------------------------------------------- errors


@dataclass(frozen=True, slots=True)
class ErrorDoc:
    instance_id: str
    errors: list[tuple[str, str]]

    @property
    def codes(self) -> set[str]:
        return {code for code, _ in self.errors}

    def __str__(self) -> str:
        return "; ".join(f"{code}: {text}" for code, text in self.errors) or "MTConnectError without errors"


class AgentError(RuntimeError):
    """The agent answered with an MTConnectError document (e.g. OUT_OF_RANGE)."""

    def __init__(self, doc: ErrorDoc) -> None:
        super().__init__(str(doc))
        self.doc = doc


def parse_error_root(root: StdET.Element) -> ErrorDoc:
    header = next((el for el in root if _local(el.tag) == "Header"), None)
    errors = []
    for el in root.iter():
        code = el.get("errorCode")
        if code:
            # 2.x puts the text in <ErrorMessage>, 1.x in the element itself.
            message = next((c.text or "" for c in el if _local(c.tag) == "ErrorMessage"), el.text or "")
            errors.append((code.strip().upper(), message.strip()))
    return ErrorDoc(instance_id=header.get("instanceId", "") if header is not None else "", errors=errors)


# --------------------------------------------------------------------------------------- streams


@dataclass(frozen=True, slots=True)
class Header:
    instance_id: str
    creation_time: str
    first_sequence: int | None
    next_sequence: int | None
    last_sequence: int | None
    buffer_size: int | None
    version: str


@dataclass(frozen=True, slots=True)
class Observation:
    """One observation: a SAMPLE, EVENT or CONDITION element with its sequence number."""

    device_name: str
    device_uuid: str
    component: str
    item_id: str
    name: str
    category: str     # SAMPLE | EVENT | CONDITION
    element: str      # the element's local name, e.g. Temperature, Execution, Fault
    sequence: int
    ts: int           # epoch ms
    value: str
    type: str = ""    # conditions carry the item type as an attribute
    sub_type: str = ""
    native_code: str = ""

    @property
    def level(self) -> str:
        """Condition level (NORMAL/WARNING/FAULT/UNAVAILABLE); empty for samples and events."""
        return CONDITION_LEVELS.get(self.element, self.element.upper()) if self.category == "CONDITION" else ""


@dataclass(frozen=True, slots=True)
class BadObservation:
    """An observation element that could not be read, with the reason and its XML."""

    reason: str
    raw: str
    sequence: int | None
    device_name: str


@dataclass(slots=True)
class StreamsDoc:
    header: Header
    observations: list[Observation]
    bad: list[BadObservation] = field(default_factory=list)

    @property
    def max_sequence(self) -> int | None:
        seqs = [o.sequence for o in self.observations] + [b.sequence for b in self.bad if b.sequence is not None]
        return max(seqs) if seqs else None


def _value(el: StdET.Element) -> str:
    children = list(el)
    if children:
        # DataSet / Table / TimeSeries entries: keep them as compact JSON-ish text, key=value.
        parts = [f"{c.get('key', _local(c.tag))}={(c.text or '').strip()}" for c in children]
        return " ".join(parts)
    return (el.text or "").strip()


def parse_streams(data: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> StreamsDoc:
    """Header and observations (sorted by sequence) of an MTConnectStreams document.

    An MTConnectError document raises ``AgentError`` carrying its codes.
    """
    root = safe_root(data, max_bytes)
    if _check_root(root, "MTConnectStreams", "MTConnectError") == "MTConnectError":
        raise AgentError(parse_error_root(root))
    header_el = next((el for el in root if _local(el.tag) == "Header"), None)
    attrs: dict[str, Any] = dict(header_el.attrib) if header_el is not None else {}
    header = Header(
        instance_id=str(attrs.get("instanceId", "")).strip(), creation_time=attrs.get("creationTime", ""),
        first_sequence=_int(attrs.get("firstSequence")), next_sequence=_int(attrs.get("nextSequence")),
        last_sequence=_int(attrs.get("lastSequence")), buffer_size=_int(attrs.get("bufferSize")),
        version=attrs.get("version", ""),
    )
    observations: list[Observation] = []
    bad: list[BadObservation] = []
    for dev_el in root.iter():
        if _local(dev_el.tag) != "DeviceStream":
            continue
        dev_name, dev_uuid = dev_el.get("name", ""), dev_el.get("uuid", "")
        for comp_el in dev_el:
            if _local(comp_el.tag) != "ComponentStream":
                continue
            component = comp_el.get("name") or comp_el.get("componentId") or comp_el.get("component") or ""
            for group in comp_el:
                category = CATEGORIES.get(_local(group.tag))
                if category is None:
                    continue
                for el in group:
                    _read_observation(el, category, dev_name, dev_uuid, component, observations, bad)
    observations.sort(key=lambda o: o.sequence)
    return StreamsDoc(header=header, observations=observations, bad=bad)


def _read_observation(el: StdET.Element, category: str, dev_name: str, dev_uuid: str, component: str,
                      out: list[Observation], bad: list[BadObservation]) -> None:
    seq = _int(el.get("sequence"))
    try:
        item_id = el.get("dataItemId", "").strip()
        if not item_id:
            msg = "observation has no dataItemId"
            raise MTConnectParseError(msg)
        if seq is None or seq < 0:
            msg = f"observation of {item_id} has no valid sequence ({el.get('sequence')!r})"
            raise MTConnectParseError(msg)
        ts = parse_timestamp_ms(el.get("timestamp"))
    except MTConnectParseError as exc:
        raw = StdET.tostring(el, encoding="unicode")[:4096]
        bad.append(BadObservation(reason=str(exc), raw=raw, sequence=seq, device_name=dev_name))
        return
    out.append(Observation(
        device_name=dev_name, device_uuid=dev_uuid, component=component, item_id=item_id,
        name=el.get("name", ""), category=category, element=_local(el.tag), sequence=seq, ts=ts,
        value=_value(el), type=el.get("type", ""), sub_type=el.get("subType", ""),
        native_code=el.get("nativeCode", ""),
    ))


def element_to_type(element: str) -> str:
    """MTConnect type name from an element name: RotaryVelocity -> ROTARY_VELOCITY."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", element).upper()
