"""MTConnect documents (probe, streams, error) parsed safely into plain Python objects.

Format only, no transport: the poller and the streaming reader hand bytes here. Parsing refuses
DTDs, entity declarations and external references (defusedxml) and bodies over a size cap, and it
tolerates what real agents send: Streams/Devices 1.x-2.x or no namespace, timestamps without ``Z``,
headers missing or disagreeing, duplicate data item ids, ``encoding="UTF8"``. Observations that cannot
be read come back beside the good ones as ``BadObservation`` (errors are data), never as an exception.
Every observation keeps its position in the document, so the exact bytes of its element can be cut
out of the document again (``StreamsDoc.element_bytes``) for a dead letter or a data-quality note.
"""

from __future__ import annotations

import codecs
import re
import xml.etree.ElementTree as StdET
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from xml.parsers import expat

import defusedxml
import defusedxml.ElementTree as SafeET

DEFAULT_MAX_BYTES = 8 * 1024 * 1024
CATEGORIES = {"Samples": "SAMPLE", "Events": "EVENT", "Condition": "CONDITION"}
CONDITION_LEVELS = {"Normal": "NORMAL", "Warning": "WARNING", "Fault": "FAULT", "Unavailable": "UNAVAILABLE"}
_NS = re.compile(r"^urn:mtconnect\.org:MTConnect(Streams|Devices|Error):([12])\.(\d+)$")
_DECLARED_ENCODING = re.compile(rb"""^(?:\xef\xbb\xbf)?\s*<\?xml[^>]*?\bencoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")
# A start tag up to its closing '>' (attribute values may hold '>'); group 1 is '/' for an empty element.
_START_TAG = re.compile(rb"""<[^\s/>]+(?:\s+[^\s=/>]+\s*=\s*(?:"[^"]*"|'[^']*'))*\s*(/?)>""")

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


def encoding_override(data: bytes) -> str | None:
    """"UTF-8" when the declaration names UTF-8 in a spelling expat does not know (``UTF8``, ``utf_8``).

    Expat then reads the document as single-byte text and refuses the first non-ASCII character, so a
    whole document would be lost to a misspelt declaration; the bytes themselves are read as UTF-8.
    """
    match = _DECLARED_ENCODING.match(data[:512])
    if not match:
        return None
    name = match[1].decode("ascii")
    try:
        canonical = codecs.lookup(name).name
    except LookupError:
        return None
    return "UTF-8" if canonical == "utf-8" and name.upper() != "UTF-8" else None


def safe_root(data: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> StdET.Element:
    """Parse ``data`` with DTDs, entities and external references forbidden and a size cap."""
    if len(data) > max_bytes:
        msg = f"document of {len(data)} bytes is larger than the {max_bytes}-byte cap"
        raise MTConnectParseError(msg)
    try:
        # DTDs themselves are harmless to expat (it fetches nothing); entity declarations are what
        # expand (billion laughs) or read files/URLs (XXE), so those are refused with a precise reason.
        parser = SafeET.DefusedXMLParser(encoding=encoding_override(data), forbid_dtd=False, forbid_entities=True,
                                         forbid_external=True)
        parser.feed(data)
        root: StdET.Element = parser.close()
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


@dataclass(frozen=True, slots=True)
class ElementSpan:
    """Where one element lies in a document: ``data[start:end]`` are its exact bytes."""

    path: tuple[str, ...]   # local names from the root element down to this one
    attrs: dict[str, str]
    owner: dict[str, str]   # attributes of the nearest Device / Agent / DeviceStream around it
    start: int
    end: int


def element_spans(data: bytes, want: Callable[[tuple[str, ...], dict[str, str]], bool]) -> list[ElementSpan]:
    """The byte spans of the elements ``want(path, attrs)`` accepts, in document order.

    A second pass with plain expat over a document that already passed ``safe_root`` (so it declares
    no entities): only run when a dead letter or a note needs an element's exact bytes.
    """
    parser = expat.ParserCreate(encoding_override(data))
    path: list[str] = []
    owners: list[dict[str, str]] = [{}]
    open_: list[tuple[int, int, bool]] = []  # (start, index in out or -1, empty element)
    out: list[ElementSpan] = []

    def start(name: str, attrs: dict[str, str]) -> None:
        pos = parser.CurrentByteIndex
        local = name.rsplit(":", 1)[-1]
        path.append(local)
        owners.append(attrs if local in ("Device", "Agent", "DeviceStream") else owners[-1])
        tag = _START_TAG.match(data, pos)
        empty = bool(tag and tag[1])
        index = -1
        if want(tuple(path), attrs):
            index = len(out)
            end = tag.end() if tag and empty else pos
            out.append(ElementSpan(tuple(path), attrs, owners[-2], pos, end))
        open_.append((pos, index, empty))

    def end(_name: str) -> None:
        pos = parser.CurrentByteIndex
        begin, index, empty = open_.pop()
        path.pop()
        owners.pop()
        if index >= 0 and not empty:
            close = data.find(b">", pos)
            span = out[index]
            out[index] = ElementSpan(span.path, span.attrs, span.owner, begin, close + 1)

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.Parse(data, True)
    return out


def _is_observation(path: tuple[str, ...], _attrs: dict[str, str]) -> bool:
    return len(path) >= 4 and path[-2] in CATEGORIES and path[-3] == "ComponentStream" and path[-4] == "DeviceStream"


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
    # Later declarations of an id already in ``items`` (real probes repeat ids).
    repeats: dict[str, list[DataItem]] = field(default_factory=dict)


@dataclass(slots=True)
class Probe:
    instance_id: str
    version: str
    buffer_size: int | None
    devices: list[DeviceInfo]
    duplicate_ids: list[str] = field(default_factory=list)
    # (device name or id, item id) of every repeated declaration, in document order.
    duplicates: list[tuple[str, str]] = field(default_factory=list)
    data: bytes = b""

    def declarations(self, device_key: str, item_id: str) -> list[bytes]:
        """The exact bytes of every ``<DataItem id=item_id>`` of one device (name, uuid or id)."""
        spans = element_spans(self.data, lambda path, attrs: path[-1] == "DataItem" and attrs.get("id") == item_id)
        return [self.data[s.start:s.end] for s in spans
                if device_key in (s.owner.get("name"), s.owner.get("uuid"), s.owner.get("id"))]

    def item(self, device_key: str, item_id: str, type_hint: str = "") -> DataItem | None:
        """Look a data item up by the device's name or uuid and the item's id.

        When the device declares the id more than once, the declaration whose type is ``type_hint`` (the
        observation's own type) is taken, else the first one.
        """
        for dev in self.devices:
            if device_key in (dev.name, dev.uuid):
                first = dev.items.get(item_id)
                if first is not None and type_hint and first.type != type_hint:
                    return next((alt for alt in dev.repeats.get(item_id, []) if alt.type == type_hint), first)
                return first
        return None


def parse_probe(data: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> Probe:
    """Devices and their data items (units, types) from an MTConnectDevices document."""
    root = safe_root(data, max_bytes)
    if _check_root(root, "MTConnectDevices", "MTConnectError") == "MTConnectError":
        raise AgentError(parse_error_root(root))
    header = next((el for el in root if _local(el.tag) == "Header"), None)
    attrs: dict[str, str] = dict(header.attrib) if header is not None else {}
    devices: list[DeviceInfo] = []
    duplicates: list[tuple[str, str]] = []
    for dev_el in root.iter():
        if _local(dev_el.tag) not in ("Device", "Agent"):
            continue
        dev = DeviceInfo(name=dev_el.get("name", ""), uuid=dev_el.get("uuid", ""), id=dev_el.get("id", ""))
        repeated: list[str] = []
        _collect_items(dev_el, dev, dev.name or dev.id, repeated)
        duplicates += [(dev.name or dev.uuid or dev.id, item_id) for item_id in repeated]
        devices.append(dev)
    return Probe(instance_id=attrs.get("instanceId", ""), version=attrs.get("version", ""),
                 buffer_size=_int(attrs.get("bufferSize")), devices=devices,
                 duplicate_ids=[item_id for _, item_id in duplicates], duplicates=duplicates, data=data)


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
                item = DataItem(
                    id=item_id, name=item_el.get("name", ""), category=item_el.get("category", "").upper(),
                    type=item_el.get("type", ""), sub_type=item_el.get("subType", ""),
                    units=item_el.get("units", ""), native_units=item_el.get("nativeUnits", ""),
                    component=component,
                )
                if item_id in dev.items:
                    # Real probes repeat ids; the first declaration is the default, the repeat is reported
                    # and kept for observations of its own type.
                    duplicates.append(item_id)
                    dev.repeats.setdefault(item_id, []).append(item)
                    continue
                dev.items[item_id] = item
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
    index: int = -1   # position among the document's observation elements (for its exact bytes)

    @property
    def device_key(self) -> str:
        """The device part of the observation's identity: its uuid, else its name."""
        return self.device_uuid or self.device_name

    @property
    def level(self) -> str:
        """Condition level (NORMAL/WARNING/FAULT/UNAVAILABLE); empty for samples and events."""
        return CONDITION_LEVELS.get(self.element, self.element.upper()) if self.category == "CONDITION" else ""


@dataclass(frozen=True, slots=True)
class BadObservation:
    """An observation element that could not be read, with the reason (its bytes: ``StreamsDoc.element_bytes``)."""

    reason: str
    sequence: int | None
    device_name: str
    device_uuid: str = ""
    item_id: str = ""
    index: int = -1

    @property
    def device_key(self) -> str:
        return self.device_uuid or self.device_name


@dataclass(slots=True)
class StreamsDoc:
    header: Header
    observations: list[Observation]
    bad: list[BadObservation] = field(default_factory=list)
    data: bytes = b""
    _spans: list[ElementSpan] | None = field(default=None, repr=False)

    @property
    def max_sequence(self) -> int | None:
        seqs = [o.sequence for o in self.observations] + [b.sequence for b in self.bad if b.sequence is not None]
        return max(seqs) if seqs else None

    def element_bytes(self, index: int) -> bytes:
        """The exact bytes of the ``index``-th observation element of the document."""
        if self._spans is None:
            self._spans = element_spans(self.data, _is_observation)
        span = self._spans[index]
        return self.data[span.start:span.end]

    def header_bytes(self) -> bytes:
        """The exact bytes of the ``<Header>`` element (empty if there is none)."""
        spans = element_spans(self.data, lambda path, _: len(path) == 2 and path[-1] == "Header")
        return self.data[spans[0].start:spans[0].end] if spans else b""


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
    # Every element the expat pass of element_spans() selects too (_is_observation), in document order,
    # so an observation's index finds its exact bytes again.
    # Only the last four levels matter (element, group, ComponentStream, DeviceStream): the tuples stay short
    # however deep a hostile document nests.
    index = 0
    Level = tuple[StdET.Element, tuple[str, ...], tuple[StdET.Element, ...]]
    todo: list[Level] = [(root, (_local(root.tag),), (root,))]
    while todo:
        el, path, chain = todo.pop()
        if _is_observation(path, {}):
            dev_el, comp_el = chain[-4], chain[-3]
            # An empty componentId (or name) is only a label: the observation's identity does not use it.
            component = comp_el.get("name") or comp_el.get("componentId") or comp_el.get("component") or ""
            _read_observation(el, CATEGORIES[path[-2]], dev_el.get("name", ""), dev_el.get("uuid", ""), component,
                              index, observations, bad)
            index += 1
        todo.extend((child, (*path[-3:], _local(child.tag)), (*chain[-3:], child)) for child in reversed(el))
    observations.sort(key=lambda o: o.sequence)  # stable: equal sequences stay in document order
    return StreamsDoc(header=header, observations=observations, bad=bad, data=data)


def _read_observation(el: StdET.Element, category: str, dev_name: str, dev_uuid: str, component: str, index: int,
                      out: list[Observation], bad: list[BadObservation]) -> None:
    seq = _int(el.get("sequence"))
    item_id = el.get("dataItemId", "").strip()
    try:
        if not item_id:
            msg = "observation has no dataItemId"
            raise MTConnectParseError(msg)
        if seq is None or seq < 0:
            msg = f"observation of {item_id} has no valid sequence ({el.get('sequence')!r})"
            raise MTConnectParseError(msg)
        ts = parse_timestamp_ms(el.get("timestamp"))
    except MTConnectParseError as exc:
        bad.append(BadObservation(reason=str(exc), sequence=seq if seq is not None and seq >= 0 else None,
                                  device_name=dev_name, device_uuid=dev_uuid, item_id=item_id, index=index))
        return
    out.append(Observation(
        device_name=dev_name, device_uuid=dev_uuid, component=component, item_id=item_id,
        name=el.get("name", ""), category=category, element=_local(el.tag), sequence=seq, ts=ts,
        value=_value(el), type=el.get("type", ""), sub_type=el.get("subType", ""),
        native_code=el.get("nativeCode", ""), index=index,
    ))


def element_to_type(element: str) -> str:
    """MTConnect type name from an element name: RotaryVelocity -> ROTARY_VELOCITY."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", element).upper()
