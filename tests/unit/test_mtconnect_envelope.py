"""A broken envelope never costs the values: recorded documents of agents that number sequences per device,
whose headers disagree with their items, that repeat ids and sequences, served over HTTP on 127.0.0.1.

Expectations are counted from the documents themselves with plain ElementTree (every element with a
``sequence`` attribute under Samples/Events/Condition), never from the connector's bookkeeping: each value
reaches the sink exactly once by event id, or is accounted for by a dead letter or a note carrying the
element's exact bytes.
"""

from __future__ import annotations

import json
import re
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from ingest.mtconnect.connector import AgentFollower, check_header
from ingest.mtconnect.documents import Header
from ingest.mtconnect.recorded_agent import RecordedAgent
from machinewatch import names, quality
from machinewatch.record import make_event_id
from tests.unit.test_mtconnect_connector import RecordingSink, alert_facts, config, running

TESTDATA = Path(__file__).resolve().parents[2] / "ingest" / "mtconnect" / "testdata"
GATEWAY = "1718000000"  # instanceId of the multi-machine gateway documents
UUIDS = {"LATHE1": "lathe-1", "MILL2": "mill-2", "GRIND3": "grind-3"}

PHASE_1 = {
    "/probe": "multi-probe.xml",
    "/current": "multi-current.xml",
    "/LATHE1/sample?from=132011": "multi-sample-lathe1.xml",
    "/MILL2/sample?from=10": "multi-sample-mill2.xml",
    "/GRIND3/sample?from=9": "multi-sample-grind3.xml",
    "*/sample": "multi-sample-empty.xml",
}
PHASE_2 = {
    "/LATHE1/sample?from=132016": "multi-sample-lathe1-reread.xml",
    "/MILL2/sample?from=15": "multi-sample-mill2-more.xml",
}


# ---------------------------------------------------------------------------------- independent reading


@dataclass(frozen=True)
class Element:
    """One observation element as plain ElementTree sees it, with its exact bytes found by text search."""

    doc: str
    device: str  # uuid
    item: str
    sequence: int
    tag: str
    timestamp: str
    text: str
    raw: bytes

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.device, self.item, self.sequence)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def device_stream(data: bytes, uuid: str) -> tuple[int, int]:
    """Where the DeviceStream of one device lies in the document, found by text search."""
    start = re.search(rb'<DeviceStream\s[^>]*\buuid="' + re.escape(uuid.encode()) + rb'"', data)
    assert start is not None, uuid
    return start.start(), data.index(b"</DeviceStream>", start.end())


def element_bytes(data: bytes, item: str, sequence: int, within: tuple[int, int]) -> list[bytes]:
    """The exact bytes of every element with this dataItemId and sequence, found by text search."""
    found = []
    for match in re.compile(rb"<([A-Za-z]+)(\s[^<>]*?)(/?)>").finditer(data, *within):
        attrs = match[2]
        if (re.search(rb'\bdataItemId="' + re.escape(item.encode()) + rb'"', attrs)
                and re.search(rb'\bsequence="' + str(sequence).encode() + rb'"', attrs)):
            if match[3]:
                found.append(match[0])
            else:
                close = data.index(b"</" + match[1] + b">", match.end())
                found.append(data[match.start():close + len(match[1]) + 3])
    return found


def elements_of(name: str) -> list[Element]:
    data = (TESTDATA / name).read_bytes()
    root = ET.fromstring(data, parser=ET.XMLParser(encoding="utf-8"))  # the file may say "UTF8"
    out = []
    for dev in root.iter():
        if _local(dev.tag) != "DeviceStream":
            continue
        within = device_stream(data, dev.get("uuid", ""))
        for group in dev.iter():
            if _local(group.tag) not in ("Samples", "Events", "Condition"):
                continue
            for el in group:
                if el.get("sequence") is None:
                    continue
                item, seq = el.get("dataItemId", ""), int(el.get("sequence", ""))
                copies = element_bytes(data, item, seq, within)
                # Byte-identical copies (a repeated element) are one text; anything else would be ambiguous.
                assert len(set(copies)) == 1, f"{name}: {item}/{seq} is not unique by text"
                out.append(Element(name, dev.get("uuid") or dev.get("name") or "", item, seq, _local(el.tag),
                                   el.get("timestamp", ""), (el.text or "").strip(), copies[0]))
    return out


def utc_ms(text: str) -> int:
    moment = datetime.fromisoformat(text)
    return round((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp() * 1000)


def event_id(instance: str, el: Element, *rule: str) -> str:
    return make_event_id("mtconnect", instance, el.device, el.item, el.sequence, *rule)


def observation_records(records: Iterable[tuple[str, str, dict[str, Any]]]) -> list[dict[str, Any]]:
    return [r for t, _, r in records if t == names.TOPIC_READINGS or r.get("kind") == "observation"]


def account(instance: str, docs: list[str], records: list[tuple[str, str, dict[str, Any]]],
            letters: list[dict[str, Any]]) -> dict[str, Any]:
    """Every observation element of ``docs`` (served in this order) reached Kafka once or is accounted for.

    Returns what was found: {"published": {key: record}, "dead": {key: letter}, "duplicates": {key: note}}.
    """
    published: dict[tuple[str, str, int], dict[str, Any]] = {}
    by_id = Counter(r["event_id"] for r in observation_records(records))
    assert all(n == 1 for n in by_id.values()), f"published twice: {[i for i, n in by_id.items() if n > 1]}"
    dead = [d for d in letters if d["kind"] == quality.KIND_DEAD_LETTER]
    dups = [d for d in letters if d["kind"] == "duplicate_observation"]
    found_dead: dict[tuple[str, str, int], dict[str, Any]] = {}
    found_dup: dict[tuple[str, str, int], dict[str, Any]] = {}
    ids = {r["event_id"]: r for r in observation_records(records)}
    seen: set[tuple[str, str, int]] = set()
    for name in dict.fromkeys(docs):
        in_doc = Counter(el.key for el in elements_of(name))
        for el in elements_of(name):
            if el.key in seen:
                continue  # a re-read (or the repeat inside this document, checked below)
            seen.add(el.key)
            rec = ids.get(event_id(instance, el))
            letter = next((d for d in dead if quality.raw_bytes(d) == el.raw), None)
            assert (rec is None) != (letter is None), f"{name} {el.key}: published={rec is not None}, " \
                f"dead-lettered={letter is not None} (exactly one expected)"
            if rec is not None:
                published[el.key] = rec
                assert rec["ts"] == utc_ms(el.timestamp), f"{el.key}: time {rec['ts']} != {el.timestamp} (UTC)"
                if "metric" in rec:
                    assert rec["value"] == float(el.text)
                else:
                    assert rec["value"] == el.text and rec["sequence"] == el.sequence
            else:
                assert letter is not None and letter["raw_encoding"] == "utf-8" and not letter["truncated"]
                assert letter["size"] == len(el.raw)
                found_dead[el.key] = letter
            for _ in range(in_doc[el.key] - 1):
                note = next(d for d in dups if quality.raw_bytes(d) == el.raw
                            and d["note_id"] == make_event_id("mtconnect", instance, el.device, el.item,
                                                              el.sequence, "duplicate_observation"))
                found_dup[el.key] = note
    # Nothing published that the documents do not hold.
    expected_ids = {event_id(instance, el) for name in docs for el in elements_of(name)}
    assert set(ids) <= expected_ids
    assert len(dead) == len(found_dead), "a dead letter that belongs to no element"
    assert len(dups) == len(found_dup), "a duplicate note that belongs to no repeated element"
    return {"published": published, "dead": found_dead, "duplicates": found_dup}


# ---------------------------------------------------------------------------------- helpers


def served(requests: list[str], routes: dict[str, str]) -> list[str]:
    """The streams documents the agent served for these requests, in order (by route)."""
    out = []
    for target in requests:
        url = urlsplit(target)
        frm = parse_qs(url.query).get("from")
        path = url.path.rstrip("/")
        key = f"{path}?from={frm[-1]}" if frm else path
        name = routes.get(key) or routes.get("*/" + path.rsplit("/", 1)[-1])
        if name and name.startswith(("multi-sample", "multi-current", "vmc-header", "vmc-sample")):
            out.append(name)
    return out


def froms(agent: RecordedAgent, path: str) -> list[int | None]:
    out: list[int | None] = []
    for target in agent.requests:
        url = urlsplit(target)
        if url.path == path:
            frm = parse_qs(url.query).get("from")
            out.append(int(frm[-1]) if frm else None)
    return out


def wait_for(what: str, done: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def marks(src: AgentFollower) -> dict[str, int]:
    return {k: m.next_sequence for k, m in src.cursor.devices.items()} if src.cursor else {}


# ---------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("mode", ["poll", "stream"])
def test_agent_numbering_per_device_every_value_once_across_a_restart(tmp_path: Path, mode: str) -> None:
    routes = dict(PHASE_1)
    with RecordedAgent(TESTDATA, routes) as agent:
        agent.serve()
        cfg = config(agent.url, tmp_path, mode=mode, start="current", interval_ms=20)
        sink = RecordingSink()
        with running(cfg, sink) as src:
            wait_for("every device read", lambda: marks(src) == {"lathe-1": 132016, "mill-2": 15, "grind-3": 13})
            wait_for("a second round of polls", lambda: all(len(froms(agent, f"/{d}/sample")) >= 2 for d in UUIDS))
        docs_1 = served(agent.requests, routes)
        # Each device was asked from its own next sequence, never from the header's nextSequence 9.
        assert froms(agent, "/LATHE1/sample")[:2] == [132011, 132016]
        assert froms(agent, "/MILL2/sample")[:2] == [10, 15]
        assert froms(agent, "/GRIND3/sample")[:2] == [9, 13]
        state = json.loads(cfg.state_path.read_text())
        assert state["per_device"] is True and state["instance_id"] == GATEWAY
        assert state["devices"] == {"grind-3": {"name": "GRIND3", "next_sequence": 13},
                                    "lathe-1": {"name": "LATHE1", "next_sequence": 132016},
                                    "mill-2": {"name": "MILL2", "next_sequence": 15}}
        assert state["next_sequence"] == 13  # a whole-agent 'from' that cannot skip any device's unread items
        first = account(GATEWAY, docs_1, sink.records, sink.letters)
        # MILL2 and GRIND3 share sequences 7 and 8 in /current: both machines' values are there.
        assert {("mill-2", "avail", 7), ("grind-3", "avail", 7), ("mill-2", "pos", 8),
                ("grind-3", "Stemp", 8)} <= set(first["published"])
        assert set(first["dead"]) == {("mill-2", "pos", 13), ("grind-3", "Stemp", 12)}
        assert "not ISO 8601" in first["dead"][("mill-2", "pos", 13)]["reason"]
        assert "outside 2000-01-01..2100" in first["dead"][("grind-3", "Stemp", 12)]["reason"]
        assert set(first["duplicates"]) == {("mill-2", "Srpm", 12)}
        # One id used by two items of MILL2: each value keeps the unit of its own declaration.
        units = {(r["metric"], r["value"]): r["unit"] for t, _, r in sink.records if t == names.TOPIC_READINGS
                 and r["device_id"] == "MILL2"}
        assert units[("pos", 12.5)] == units[("pos", 13.0)] == "mm"
        assert units[("pos", 40.0)] == units[("pos", 55.0)] == "%"
        assert src.metrics.duplicates == 1

        # The connector restarts from its state file; LATHE1 re-sends two published observations.
        for key, name in PHASE_2.items():
            agent.route(key, name)
        routes.update(PHASE_2)
        before = len(agent.requests)
        with running(cfg, sink) as src:
            wait_for("new data read", lambda: marks(src) == {"lathe-1": 132018, "mill-2": 17, "grind-3": 13})
            assert src.metrics.reread_skipped == 2
        assert not [t for t in agent.requests[before:] if t.startswith("/current")], "baselined again"
        docs = docs_1 + served(agent.requests[before:], routes)
        account(GATEWAY, docs, sink.records, sink.letters)

    # Every machine's UNAVAILABLE event (the device-alerts job opens machine_unavailable from it), with ids
    # that name the device and the data item.
    alerts = {r["event_id"] for r in alert_facts(sink.records) if r["rule"] == "machine_unavailable"}
    unavailable = [el for name in dict.fromkeys(docs) for el in elements_of(name)
                   if el.tag == "Availability" and el.text == "UNAVAILABLE"]
    assert {el.device for el in unavailable} == set(UUIDS.values())
    assert {event_id(GATEWAY, el) for el in unavailable} == alerts
    kinds = Counter(d["kind"] for d in sink.notes())
    assert kinds["per_device_sequences"] == 1 and kinds["duplicate_item_id"] == 2  # the probe, read twice
    header_notes = sink.notes("header_disagrees")
    assert any("nextSequence=9" in n["reason"] and "sequences 3..132010" in n["reason"] for n in header_notes)
    assert all(quality.raw_bytes(n).startswith(b"<Header ") for n in header_notes)
    probe = (TESTDATA / "multi-probe.xml").read_bytes()
    for note in sink.notes("duplicate_item_id"):
        assert quality.raw_bytes(note) in probe and b'id="pos"' in quality.raw_bytes(note)
        assert note["note_id"] == make_event_id("mtconnect", GATEWAY, "MILL2", "pos", 1, "duplicate_item_id")



@pytest.mark.parametrize("mode", ["poll", "stream"])
def test_old_state_file_and_items_below_from_switch_to_per_device(tmp_path: Path, mode: str) -> None:
    routes = {
        "/probe": "multi-probe.xml",
        "/sample?from=132011": "multi-sample-mixed.xml",
        "/GRIND3/sample": "multi-sample-grind3.xml",  # never seen by the old state: read without 'from'
        "*/sample": "multi-sample-empty.xml",
    }
    with RecordedAgent(TESTDATA, routes) as agent:
        agent.serve()
        cfg = config(agent.url, tmp_path, mode=mode, interval_ms=20)
        # Written by the version before per-device marks: only instanceId and the next sequence.
        cfg.state_path.write_text(json.dumps({"instance_id": GATEWAY, "next_sequence": 132011,
                                              "agent_url": agent.url, "updated_ms": 1}))
        sink = RecordingSink()
        with running(cfg, sink) as src:
            wait_for("every device read", lambda: marks(src) == {"lathe-1": 132013, "mill-2": 12, "grind-3": 13})
            wait_for("a second round of polls", lambda: all(len(froms(agent, f"/{d}/sample")) >= 2 for d in UUIDS))
        assert froms(agent, "/sample") == [132011]
        assert froms(agent, "/LATHE1/sample")[:2] == [132013, 132013]
        assert froms(agent, "/MILL2/sample")[:2] == [12, 12]
        assert froms(agent, "/GRIND3/sample")[:2] == [None, 13]
        found = account(GATEWAY, served(agent.requests, routes), sink.records, sink.letters)
    # MILL2's 10 and 11 lie below the requested from=132011: published, not taken for re-reads.
    assert {("mill-2", "pos", 10), ("mill-2", "pos", 11), ("lathe-1", "Srpm", 132012)} <= set(found["published"])
    [note] = sink.notes("per_device_sequences")
    assert "below the requested from=132011" in note["reason"]
    assert quality.raw_bytes(note) == (TESTDATA / "multi-sample-mixed.xml").read_bytes()
    # The mixed document's header agrees with its items: no header note for it.
    assert not [n for n in sink.notes("header_disagrees") if "132011..132012" in n["reason"]]


@pytest.mark.parametrize("mode", ["stream", "poll"])
def test_first_run_on_the_whole_buffer_of_an_agent_numbering_per_device(tmp_path: Path, mode: str) -> None:
    routes = {"/probe": "multi-probe.xml", "/sample": "multi-sample-all.xml", "*/sample": "multi-sample-empty.xml"}
    with RecordedAgent(TESTDATA, routes) as agent:
        agent.serve()
        cfg = config(agent.url, tmp_path, mode=mode, start="buffer", interval_ms=20)
        sink = RecordingSink()
        with running(cfg, sink) as src:
            wait_for("every device read", lambda: marks(src) == {"lathe-1": 132016, "mill-2": 15, "grind-3": 13})
            wait_for("a round of polls", lambda: all(froms(agent, f"/{d}/sample") for d in UUIDS))
        assert froms(agent, "/sample") == [None]
        assert [froms(agent, f"/{d}/sample")[0] for d in UUIDS] == [132016, 15, 13]
        found = account(GATEWAY, served(agent.requests, routes), sink.records, sink.letters)
    # MILL2 and GRIND3 both used 10, 11 and 12: every one of their values is there.
    assert {("mill-2", "pos", 10), ("grind-3", "avail", 10), ("mill-2", "pos", 11), ("grind-3", "exec", 11),
            ("mill-2", "Srpm", 12)} <= set(found["published"])
    assert set(found["dead"]) == {("mill-2", "pos", 13), ("grind-3", "Stemp", 12)}
    assert set(found["duplicates"]) == {("mill-2", "Srpm", 12)}
    [note] = sink.notes("per_device_sequences")
    assert "used by device" in note["reason"]
    alerts = {(r["device_id"], r["sequence"]) for r in alert_facts(sink.records)}
    assert alerts == {("GRIND3", 10)}


HEADER_CASES = [
    # (document, device path in the agent URL, cursor after it, problems noted)
    ("vmc-header-behind.xml", "", 106, {"next_behind_items", "last_behind_items"}),
    ("vmc-header-ahead.xml", "", 106, {"next_skips", "first_above_items", "next_beyond_last"}),
    ("vmc-header-agrees.xml", "", 106, set()),
    ("vmc-header-filtered.xml", "/VMC7", 120, set()),
]


@pytest.mark.parametrize(("name", "prefix", "cursor", "problems"), HEADER_CASES)
def test_header_is_used_only_when_it_agrees_with_the_items(
    tmp_path: Path, name: str, prefix: str, cursor: int, problems: set[str]
) -> None:
    routes = {f"{prefix}/probe": "vmc-probe.xml", f"{prefix}/sample?from=101": name,
              f"{prefix}/sample?from=106": "vmc-sample-empty.xml",
              f"{prefix}/sample?from=120": "vmc-sample-empty-120.xml"}
    with RecordedAgent(TESTDATA, routes) as agent:
        agent.serve()
        cfg = config(agent.url + prefix, tmp_path, mode="poll", interval_ms=20)
        cfg.state_path.write_text(json.dumps({"instance_id": "55", "next_sequence": 101}))
        sink = RecordingSink()
        with running(cfg, sink) as src:
            wait_for("the next poll", lambda: len(froms(agent, f"{prefix}/sample")) >= 3)
            assert src.cursor is not None and src.cursor.next_sequence == cursor and not src.cursor.per_device
        # Never backwards past items seen, never forward past items not sent.
        assert froms(agent, f"{prefix}/sample")[:3] == [101, cursor, cursor]
        found = account("55", [name], sink.records, sink.letters)
    assert len(found["published"]) == 5 and not found["dead"]
    assert not sink.of_kind("gap"), "a header that disagrees with the items must not claim a gap"
    alerts = alert_facts(sink.records)
    assert [(a["rule"], a["sequence"]) for a in alerts] == [("machine_unavailable", 105)]
    notes = sink.notes("header_disagrees")
    if not problems:
        assert not notes
        return
    [note] = notes
    data = (TESTDATA / name).read_bytes()
    header = re.search(rb"<Header\s[^>]*/>", data)
    assert header is not None and quality.raw_bytes(note) == header[0]
    first, nxt, last = (re.search(rb'\b' + a + rb'="(\d+)"', header[0])[1].decode()  # type: ignore[index]
                        for a in (b"firstSequence", b"nextSequence", b"lastSequence"))
    assert f"firstSequence={first} nextSequence={nxt} lastSequence={last}" in note["reason"]
    assert "sequences 101..105" in note["reason"] and f"next {cursor}" in note["reason"]
    assert note["note_id"] == make_event_id("mtconnect", "55", "", "", f"{first}/{nxt}/{last}:101-105",
                                            "header_disagrees")
    said = {"next_behind_items": "is not above the highest item", "last_behind_items": "lastSequence",
            "next_skips": "would skip 106..4999", "first_above_items": "firstSequence 103 is above",
            "next_beyond_last": "is beyond lastSequence"}
    for problem in problems:
        assert said[problem] in note["reason"]


def test_agent_restart_without_a_new_instance_is_told_by_the_items_when_the_header_disagrees(
    tmp_path: Path,
) -> None:
    routes = {"/probe": "vmc-probe.xml", "/sample?from=200": "vmc-out-of-range.xml",
              "/sample": "vmc-header-behind.xml",  # the buffer's start: items 101..105, header says 50
              "/sample?from=1": "vmc-header-agrees.xml", "/sample?from=106": "vmc-sample-empty.xml"}
    with RecordedAgent(TESTDATA, routes) as agent:
        agent.serve()
        cfg = config(agent.url, tmp_path, mode="poll", interval_ms=20)
        cfg.state_path.write_text(json.dumps({"instance_id": "55", "next_sequence": 200}))
        sink = RecordingSink()
        with running(cfg, sink) as src:
            wait_for("the new instance read", lambda: len(froms(agent, "/sample")) >= 4)
            assert src.cursor is not None and src.cursor.next_sequence == 106
        assert froms(agent, "/sample")[:4] == [200, None, 1, 106]
    [restart] = sink.of_kind("agent_restarted")
    assert "went back from 200 to 105" in restart["detail"]
    # Read again from 1 after the restart: every value of the buffer is published once.
    assert len(account("55", ["vmc-header-agrees.xml"], sink.records, sink.letters)["published"]) == 5


@pytest.mark.parametrize(("attrs", "seqs", "kw", "problems"), [
    ({"next_sequence": 106, "last_sequence": 119, "first_sequence": 1}, [101, 105], {"requested": 101}, []),
    ({"next_sequence": 9, "last_sequence": 8, "first_sequence": 1}, [3, 132010], {"sample": False},
     ["next_behind_items", "last_behind_items"]),
    ({"next_sequence": 50, "last_sequence": 49, "first_sequence": 1}, [101, 105], {"requested": 101},
     ["next_behind_items", "last_behind_items"]),
    ({"next_sequence": 120, "last_sequence": 119, "first_sequence": 1}, [101, 105], {"requested": 101},
     ["next_skips"]),
    ({"next_sequence": 120, "last_sequence": 119, "first_sequence": 1}, [101, 105],
     {"requested": 101, "filtered": True}, []),
    ({"next_sequence": 9, "last_sequence": 8, "first_sequence": 1}, [], {"requested": 15, "filtered": True},
     ["next_behind_from"]),
    ({"next_sequence": 106, "last_sequence": 105, "first_sequence": 1}, [], {"requested": 106}, []),
    ({"next_sequence": 300, "last_sequence": 299, "first_sequence": 200}, [200, 299], {}, []),
    ({"next_sequence": 300, "last_sequence": 299, "first_sequence": 210}, [200, 299], {}, ["first_above_items"]),
    ({"next_sequence": 300, "last_sequence": 299, "first_sequence": 210}, [200, 299], {"sample": False}, []),
])
def test_header_rule(attrs: dict[str, int], seqs: list[int], kw: dict[str, Any], problems: list[str]) -> None:
    header = Header(instance_id="1", creation_time="", buffer_size=None, version="", **attrs)
    check = check_header(header, seqs, **kw)
    assert [code for code, _ in check.problems] == problems
    assert check.agrees == (not problems)


@pytest.mark.parametrize("padding", [100_000, 300_000])
def test_a_refused_document_is_dead_lettered_with_its_exact_bytes(tmp_path: Path, padding: int) -> None:
    # Latin-1 text in a document that declares UTF-8: not well-formed, so the whole document is refused.
    good = (TESTDATA / "vmc-header-agrees.xml").read_bytes()
    broken = good.replace(b"<Streams>", b"<!-- " + b"Temp\xe9rature " * (padding // 13) + b" --><Streams>")
    (tmp_path / "broken.xml").write_bytes(broken)
    routes = {"/probe": "vmc-probe.xml", "/sample?from=101": str(tmp_path / "broken.xml"),
              "/sample?from=106": "vmc-sample-empty.xml"}
    with RecordedAgent(TESTDATA, routes) as agent:
        agent.serve()
        cfg = config(agent.url, tmp_path, mode="poll", interval_ms=20)
        cfg.state_path.write_text(json.dumps({"instance_id": "55", "next_sequence": 101}))
        sink = RecordingSink()
        with running(cfg, sink) as src:
            wait_for("the refusal", lambda: src.metrics.refused_documents >= 1)
            agent.route("/sample?from=101", "vmc-header-agrees.xml")  # the agent sends a good one next time
            wait_for("the good document", lambda: src.cursor is not None and src.cursor.next_sequence == 106)
    letter = next(d for d in sink.letters if d["kind"] == quality.KIND_DEAD_LETTER)
    assert "not well-formed" in letter["reason"] and letter["raw_encoding"] == "base64"
    assert letter["size"] == len(broken) and letter["truncated"] == (len(broken) > quality.MAX_RAW_BYTES)
    assert quality.raw_bytes(letter) == broken[:quality.MAX_RAW_BYTES]
    # Retried from the same cursor: the values were not lost to the refusal.
    assert len(account("55", ["vmc-header-agrees.xml"], sink.records, [])["published"]) == 5
