"""MTConnect document parsing: the real documents, sloppy agents and malicious XML."""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ingest.mtconnect.documents import (
    AgentError,
    MTConnectParseError,
    element_to_type,
    normalise_unit,
    parse_probe,
    parse_streams,
    parse_timestamp_ms,
)
from tests.realdata import realdata_file

# An observation element, found by text search rather than an XML parser: any tag carrying both a
# dataItemId and a sequence attribute.
OBS_TAG = re.compile(r"<([A-Za-z:]+)\b([^<>]*?\bdataItemId=\"([^\"]*)\"[^<>]*)>")


def count_by_item(text: str) -> tuple[Counter[str], set[int]]:
    counts: Counter[str] = Counter()
    seqs: set[int] = set()
    for match in OBS_TAG.finditer(text):
        seq = re.search(r"\bsequence=\"(\d+)\"", match[2])
        if seq:
            counts[match[3]] += 1
            seqs.add(int(seq[1]))
    return counts, seqs


@pytest.mark.parametrize("name", ["mazak-current-1.7.xml", "demo-sample-1.7.xml"])
def test_real_streams_parse_into_the_observations_they_contain(name: str) -> None:
    raw = realdata_file(f"mtconnect/{name}").read_bytes()
    expected, expected_seqs = count_by_item(raw.decode("utf-8"))
    doc = parse_streams(raw)
    assert not doc.bad
    assert Counter(o.item_id for o in doc.observations) == expected
    assert {o.sequence for o in doc.observations} == expected_seqs
    assert [o.sequence for o in doc.observations] == sorted(o.sequence for o in doc.observations)
    header_attrs = dict(re.findall(r'(\w+)="([^"]*)"', re.search(r"<Header\b[^>]*>", raw.decode())[0]))  # type: ignore[index]
    assert doc.header.instance_id == header_attrs["instanceId"]
    assert doc.header.next_sequence == int(header_attrs["nextSequence"])
    assert doc.header.first_sequence == int(header_attrs["firstSequence"])


def test_real_streams_categories_and_condition_levels() -> None:
    raw = realdata_file("mtconnect/mazak-current-1.7.xml").read_text()
    doc = parse_streams(raw.encode())
    # Count category blocks' children independently: slice the text between the group tags.
    by_cat: Counter[str] = Counter()
    for group, cat in (("Samples", "SAMPLE"), ("Events", "EVENT"), ("Condition", "CONDITION")):
        for block in re.findall(rf"<{group}>(.*?)</{group}>", raw, re.S):
            by_cat[cat] += len(count_by_item(block)[1])
    assert Counter(o.category for o in doc.observations) == by_cat
    faults = [o for o in doc.observations if o.level == "FAULT"]
    assert [(f.item_id, f.value, f.native_code) for f in faults] == [("logic_cond", "ILLEGAL MMS UNIT", "230")]
    # Several active conditions of one item (three WARNINGs of logic_cond) all survive.
    assert sum(1 for o in doc.observations if o.item_id == "logic_cond" and o.level == "WARNING") == 3
    dataset = next(o for o in doc.observations if o.item_id == "cvars")
    assert dataset.value.count("=") == raw.count("<Entry ")


def test_real_nist_probe_items_and_units() -> None:
    raw = realdata_file("mtconnect/nist-smstestbed-probe-1.3.xml").read_text()
    probe = parse_probe(raw.encode())
    chunks = re.split(r"<Device\s", raw)[1:]
    expected = {re.search(r'name="([^"]+)"', c)[1]: len(re.findall(r"<DataItem\s", c)) for c in chunks}  # type: ignore[index]
    assert {d.name: len(d.items) for d in probe.devices} == expected
    assert probe.instance_id == "1629315847"
    units = Counter(re.findall(r'\sunits="([^"]+)"', raw))
    parsed_units = Counter(i.units for d in probe.devices for i in d.items.values() if i.units)
    assert parsed_units == units
    for dev in probe.devices:
        for item in dev.items.values():
            if item.units == "CELSIUS":
                assert item.unit == "°C"
            if item.units == "REVOLUTION/MINUTE":
                assert item.unit == "rpm"
            if item.units == "MILLIMETER":
                assert item.unit == "mm"
    assert probe.item("GFAgie01", "GFAgie01-X_2").type == "POSITION"  # type: ignore[union-attr]


def test_unit_normalisation_and_type_names() -> None:
    assert normalise_unit("PERCENT") == "%"
    assert normalise_unit("percent") == "%"
    assert normalise_unit("SOMETHING_NEW") == "SOMETHING_NEW"
    assert normalise_unit(None) == ""
    assert element_to_type("RotaryVelocity") == "ROTARY_VELOCITY"
    assert element_to_type("Availability") == "AVAILABILITY"


STREAM_TMPL = """<?xml version="1.0" encoding="{enc}"?>
<MTConnectStreams{ns}><Header creationTime="2024-05-01T10:00:00Z" instanceId="7" {hdr}/>
<Streams><DeviceStream name="M1" uuid="u1"><ComponentStream component="Device" name="M1" componentId="">
<Samples><Temperature dataItemId="t" sequence="5" timestamp="{ts}">21.5</Temperature>
<Temperature dataItemId="t" sequence="6" timestamp="not-a-time">22</Temperature>
<Temperature dataItemId="t" timestamp="2024-05-01T10:00:00Z">23</Temperature></Samples>
<Events><Execution dataItemId="e" sequence="4" timestamp="{ts}">ACTIVE</Execution></Events>
</ComponentStream></DeviceStream></Streams></MTConnectStreams>"""


@pytest.mark.parametrize("ns", ["", ' xmlns="urn:mtconnect.org:MTConnectStreams:1.3"',
                                ' xmlns="urn:mtconnect.org:MTConnectStreams:2.3"'])
@pytest.mark.parametrize("ts", ["2024-05-01T10:00:01.123456Z", "2024-05-01T10:00:01.123456", "2024-05-01T10:00:01.123"])
def test_sloppy_agents_are_accepted(ns: str, ts: str) -> None:
    doc = parse_streams(STREAM_TMPL.format(enc="UTF8", ns=ns, ts=ts, hdr='nextSequence="7"').encode())
    expected_ms = int(datetime(2024, 5, 1, 10, 0, 1, 123000, tzinfo=UTC).timestamp() * 1000)
    assert [(o.sequence, o.ts) for o in doc.observations] == [(4, expected_ms), (5, expected_ms)]
    # Bad observations come back as data, with the reason, not as an exception.
    assert sorted(b.reason for b in doc.bad) == sorted([
        "timestamp 'not-a-time' is not ISO 8601", "observation of t has no valid sequence (None)"])
    assert doc.header.first_sequence is None and doc.header.next_sequence == 7


def test_timestamp_without_zone_is_utc() -> None:
    assert parse_timestamp_ms("2021-06-29T05:38:07.369971") == parse_timestamp_ms("2021-06-29T05:38:07.369971Z")
    assert parse_timestamp_ms("2021-06-29T07:38:07+02:00") == parse_timestamp_ms("2021-06-29T05:38:07Z")


def test_duplicate_ids_in_probe_are_reported_first_kept() -> None:
    probe = parse_probe(b"""<MTConnectDevices xmlns="urn:mtconnect.org:MTConnectDevices:1.7"><Header instanceId="1"/>
      <Devices><Device id="d" name="M1" uuid="u"><DataItems>
      <DataItem id="x" category="SAMPLE" type="TEMPERATURE" units="CELSIUS"/>
      <DataItem id="x" category="SAMPLE" type="LOAD" units="PERCENT"/></DataItems></Device></Devices>
      </MTConnectDevices>""")
    assert probe.duplicate_ids == ["x"]
    assert probe.item("M1", "x").unit == "°C"  # type: ignore[union-attr]
    assert probe.item("u", "x") is probe.item("M1", "x")


def test_error_documents_raise_agent_error_with_codes() -> None:
    v1 = b"""<MTConnectError xmlns="urn:mtconnect.org:MTConnectError:1.3"><Header instanceId="9"/>
      <Errors><Error errorCode="OUT_OF_RANGE">'from' must be greater than 10</Error></Errors></MTConnectError>"""
    v2 = b"""<MTConnectError xmlns="urn:mtconnect.org:MTConnectError:2.2"><Header instanceId="9"/>
      <Errors><OutOfRange errorCode="OUT_OF_RANGE"><ErrorMessage>from too low</ErrorMessage></OutOfRange>
      </Errors></MTConnectError>"""
    for raw, text in ((v1, "'from' must be greater than 10"), (v2, "from too low")):
        with pytest.raises(AgentError) as info:
            parse_streams(raw)
        assert info.value.doc.codes == {"OUT_OF_RANGE"}
        assert text in str(info.value)


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<MTConnectStreams><Header instanceId="1"/><Streams>&lol3;</Streams></MTConnectStreams>"""
XXE = b"""<?xml version="1.0"?><!DOCTYPE m [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<MTConnectStreams><Header instanceId="&xxe;"/></MTConnectStreams>"""
XXE_PARAM = b"""<?xml version="1.0"?><!DOCTYPE m [<!ENTITY % p SYSTEM "http://127.0.0.1:1/evil.dtd"> %p;]>
<MTConnectStreams/>"""


@pytest.mark.parametrize(("raw", "reason"), [
    (BILLION_LAUGHS, "entity expansion"),
    (XXE, "XXE"),
    (XXE_PARAM, "refused"),
    (b"<MTConnectStreams><Header", "not well-formed"),
    (b'<MTConnectStreams xmlns="urn:example:other"/>', "not an MTConnect"),
    (b"<html><body>proxy error</body></html>", "root element is <html>"),
])
def test_malicious_or_foreign_xml_is_refused_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(MTConnectParseError, match=reason):
        parse_streams(raw)


def test_oversized_document_is_refused_before_parsing() -> None:
    body = b"<MTConnectStreams>" + b" " * 5000 + b"</MTConnectStreams>"
    with pytest.raises(MTConnectParseError, match="larger than the 4096-byte cap"):
        parse_streams(body, max_bytes=4096)


TESTDATA = Path(__file__).resolve().parents[2] / "ingest" / "mtconnect" / "testdata"


def _text_elements(data: bytes) -> list[bytes]:
    """Every observation element's bytes, in document order, found by text search (no XML parser)."""
    out = []
    for match in re.finditer(rb"<([A-Za-z:]+)(\s[^<>]*?\bsequence=\"[^\"]*\"[^<>]*?)(/?)>", data):
        if match[3]:
            out.append(match[0])
        else:
            close = data.index(b"</" + match[1] + b">", match.end())
            out.append(data[match.start():close + len(match[1]) + 3])
    return out


@pytest.mark.parametrize("name", [*sorted(p.name for p in TESTDATA.glob("*sample*.xml")), "multi-current.xml"])
def test_every_observation_knows_its_exact_bytes(name: str) -> None:
    data = (TESTDATA / name).read_bytes()
    doc = parse_streams(data)
    expected = _text_elements(data)
    got = {o.index: doc.element_bytes(o.index) for o in doc.observations}
    got.update({b.index: doc.element_bytes(b.index) for b in doc.bad})
    assert [got[i] for i in sorted(got)] == expected
    for obs in doc.observations:
        raw = doc.element_bytes(obs.index)
        assert f'sequence="{obs.sequence}"'.encode() in raw and f'dataItemId="{obs.item_id}"'.encode() in raw
    assert doc.header_bytes() == re.search(rb"<Header\s[^>]*/>", data)[0]  # type: ignore[index]


@pytest.mark.parametrize("name", ["mazak-current-1.7.xml", "demo-sample-1.7.xml"])
def test_real_documents_exact_bytes(name: str) -> None:
    data = realdata_file(f"mtconnect/{name}").read_bytes()
    doc = parse_streams(data)
    assert [doc.element_bytes(i) for i in range(len(doc.observations))] == _text_elements(data)


def test_exact_bytes_of_odd_but_well_formed_elements() -> None:
    data = ('<?xml version="1.0" encoding="UTF8"?>\n'
            '<m:MTConnectStreams xmlns:m="urn:mtconnect.org:MTConnectStreams:1.3">'
            '<m:Header instanceId="1" nextSequence="4"/><m:Streams><m:DeviceStream name="M" uuid="u">'
            '<m:ComponentStream componentId=""><m:Condition>'
            '<m:Normal dataItemId="c" sequence="1" timestamp="2024-01-01T00:00:00" type="A>B"/>'
            '<m:Fault dataItemId="c" sequence="2" timestamp="2024-01-01T00:00:01Z" type="X">'
            'Überhitzt &lt;90°C&gt;</m:Fault >'
            '</m:Condition><m:Events><m:Execution dataItemId="e" sequence="3" timestamp="never">ACTIVE</m:Execution>'
            '</m:Events></m:ComponentStream></m:DeviceStream></m:Streams></m:MTConnectStreams>').encode()
    doc = parse_streams(data)
    assert [o.value for o in doc.observations] == ["", "Überhitzt <90°C>"]
    assert doc.element_bytes(0) == \
        b'<m:Normal dataItemId="c" sequence="1" timestamp="2024-01-01T00:00:00" type="A>B"/>'
    assert doc.element_bytes(1) == ('<m:Fault dataItemId="c" sequence="2" timestamp="2024-01-01T00:00:01Z" '
                                    'type="X">Überhitzt &lt;90°C&gt;</m:Fault >').encode()
    [bad] = doc.bad
    assert doc.element_bytes(bad.index) == \
        b'<m:Execution dataItemId="e" sequence="3" timestamp="never">ACTIVE</m:Execution>'
    assert (bad.sequence, bad.device_key, bad.item_id) == (3, "u", "e")


def test_utf8_declared_as_UTF8_with_non_ascii_text_is_read() -> None:  # noqa: N802 - the spelling is the point
    doc = parse_streams((TESTDATA / "multi-current.xml").read_bytes())
    assert any(o.value == "Kühlmittel niedrig" for o in doc.observations)
    assert len(doc.observations) == 12 and not doc.bad


def test_probe_keeps_every_declaration_of_a_repeated_id() -> None:
    data = (TESTDATA / "multi-probe.xml").read_bytes()
    probe = parse_probe(data)
    assert probe.duplicates == [("MILL2", "pos")]
    decls = probe.declarations("MILL2", "pos")
    assert len(decls) == 2 and b'type="POSITION"' in decls[0] and b'type="LOAD"' in decls[1]
    assert all(d in data for d in decls)
    assert probe.item("MILL2", "pos").unit == "mm"  # type: ignore[union-attr]
    assert probe.item("mill-2", "pos", "LOAD").unit == "%"  # type: ignore[union-attr]
    assert probe.item("MILL2", "pos", "TEMPERATURE").unit == "mm"  # type: ignore[union-attr]
    # The same id in different devices is no repeat.
    assert {d.name for d in probe.devices if "avail" in d.items} == {"LATHE1", "MILL2", "GRIND3"}
