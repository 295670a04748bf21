"""The MQTT collector without a broker: topic filters, payload mapping (errors as data, exact bytes), event ids,
its settings, and acknowledgements only for what was committed, in order, on the connection that received it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ingest.mqtt import plugin
from ingest.mqtt.config import MqttSettings, Subscription
from ingest.mqtt.mapping import MessageMapper, match
from ingest.mqtt.source import MqttSource, _Message
from machinewatch.plugins import PluginConfigError
from machinewatch.record import make_event_id

TESTDATA = Path(__file__).resolve().parents[2] / "ingest" / "mqtt" / "testdata"
NOW_MS = 1_717_171_800_000


def sub(**fields: Any) -> Subscription:
    return Subscription.model_validate({"topic": "plant/{site}/{device_id}/{metric}", **fields})


def mapper(*subs: Subscription, max_payload_bytes: int = 1024) -> MessageMapper:
    return MessageMapper(list(subs), max_payload_bytes, origin_prefix="mqtt://127.0.0.1:1883/")


# ---------------------------------------------------------------------- topic filters

@pytest.mark.parametrize(("pattern", "topic", "expected"), [
    ("plant/{site}/{device_id}/{metric}", "plant/s1/p7/temp", {"site": "s1", "device_id": "p7", "metric": "temp"}),
    ("plant/{site}/{device_id}/{metric}", "plant/s1/p7", None),
    ("plant/{site}/{device_id}/{metric}", "plant/s1/p7/temp/extra", None),
    ("plant/+/{device_id}/#", "plant/s1/p7", {"device_id": "p7"}),
    ("plant/+/{device_id}/#", "plant/s1/p7/a/b/c", {"device_id": "p7"}),
    ("plant/+/{device_id}/#", "other/s1/p7/a", None),
    ("#", "$SYS/broker/uptime", None),
    ("{device_id}/#", "$SYS/broker", None),
])
def test_topic_filters_follow_mqtt_wildcards_and_capture_named_levels(pattern: str, topic: str,
                                                                      expected: dict[str, str] | None) -> None:
    assert match(Subscription(topic=pattern, device_id="d", metric="m"), topic) == expected


def test_the_broker_gets_plus_for_every_named_level() -> None:
    assert sub().mqtt_filter() == "plant/+/+/+"
    assert Subscription(topic="a/{x}/#", device_id="{x}", metric="m").mqtt_filter() == "a/+/#"


@pytest.mark.parametrize(("fields", "complaint"), [
    ({"topic": "a/#/b", "device_id": "d", "metric": "m"}, "'#' must be the last level"),
    ({"topic": "a/dev{x}", "device_id": "d", "metric": "m"}, "mixes text and a wildcard"),
    ({"topic": "a/{x}/{x}", "device_id": "d", "metric": "m"}, "names a level twice"),
    ({"topic": "a/{line}", "device_id": "{line}-{device}", "metric": "m"}, "names level {device}"),
    ({"topic": "a/{line}", "metric": "m"}, "device_id is not set"),
    ({"topic": "a/{device_id}"}, "metric is not set"),
    ({"topic": "a/{device_id}/{metric}", "fields": {"t": "temp"}}, "either fields"),
    ({"topic": "a/{device_id}/{metric}", "format": "number", "time": "ts"}, "format 'number'"),
])
def test_a_subscription_that_cannot_work_is_refused_with_the_reason(fields: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        Subscription.model_validate(fields)


# ---------------------------------------------------------------------- payloads

def test_a_json_reading_takes_device_metric_site_from_the_topic_and_time_from_the_payload() -> None:
    payload = (TESTDATA / "plant-reading.json").read_bytes()
    out = mapper(sub(time="ts", unit_field="unit", region="eu")).map("plant/s1/press-7/temperature", payload, NOW_MS)
    assert out.rejected == []
    [r] = out.readings
    assert (r.source, r.device_id, r.metric, r.value, r.unit, r.ts, r.site, r.region) == (
        "mqtt", "press-7", "temperature", 21.5, "°C", 1717171717000, "s1", "eu")
    assert r.event_id == make_event_id("mqtt", "press-7", 1717171717000, "temperature")


def test_one_message_can_carry_several_readings_with_an_iso_time_and_a_device_template() -> None:
    s = Subscription(topic="sensors/{line}/{device}/state", device_id="{line}-{device}", time="time",
                     time_format="iso8601", fields={"temperature": "temp_c", "humidity": "rh.pct", "co2": "co2"},
                     site="{line}")
    payload = (TESTDATA / "sensors-state.json").read_bytes()
    out = mapper(s).map("sensors/l2/t9/state", payload, NOW_MS)
    assert out.rejected == []  # a field absent from the payload (co2) is no reading, not an error
    assert {(r.device_id, r.metric, r.value, r.site) for r in out.readings} == {
        ("l2-t9", "temperature", 41.2, "l2"), ("l2-t9", "humidity", 33.0, "l2")}
    assert {r.ts for r in out.readings} == {1717243200000}


def test_a_bare_number_takes_the_receive_time() -> None:
    s = Subscription(topic="meters/{device_id}/power", format="number", metric="power", unit="W")
    [r] = mapper(s).map("meters/m1/power", b" 1234.5\n", NOW_MS).readings
    assert (r.device_id, r.metric, r.value, r.unit, r.ts) == ("m1", "power", 1234.5, "W", NOW_MS)


def test_event_ids_are_stable_for_a_redelivery_when_the_payload_says_time_or_id() -> None:
    timed, by_id, received = sub(time="ts"), sub(id_field="seq"), sub()
    payload = b'{"value": 1, "ts": 1717171717000, "seq": 17}'
    m = mapper(timed)
    assert m.map("plant/s/d/t", payload, NOW_MS).readings == m.map("plant/s/d/t", payload, NOW_MS + 5000).readings
    first = mapper(by_id).map("plant/s/d/t", payload, NOW_MS).readings[0]
    again = mapper(by_id).map("plant/s/d/t", payload, NOW_MS + 5000).readings[0]
    assert first.event_id == again.event_id == make_event_id("mqtt", "d", "t", "id", "17")
    # Receive time only: a later delivery is a different reading (README, "Delivery").
    a = mapper(received).map("plant/s/d/t", payload, NOW_MS).readings[0]
    b = mapper(received).map("plant/s/d/t", payload, NOW_MS + 1).readings[0]
    assert a.event_id != b.event_id
    c = mapper(received).map("plant/s/d/t", b'{"value": 2}', NOW_MS).readings[0]
    assert a.event_id != c.event_id  # two payloads received in the same millisecond


@pytest.mark.parametrize(("payload", "reason"), [
    ((TESTDATA / "not-json.bin").read_bytes(), "not JSON"),
    (b"[1, 2]", "expected a JSON object, got list"),
    ((TESTDATA / "bad-value.json").read_bytes(), "value 'hot' is not a number"),
    (b'{"value": true, "ts": 1717171717000}', "value True is not a number"),
    (b'{"value": 1e999, "ts": 1717171717000}', "not finite"),
    (b'{"ts": 1717171717000}', "value field 'value' is missing"),
    (b'{"value": 1}', "time field 'ts' is missing"),
    (b'{"value": 1, "ts": "yesterday"}', "time 'yesterday' is not a number"),
    (b'{"value": 1, "ts": 1717171717}', "outside 2000-01-01..2100-01-01"),  # seconds given for milliseconds
])
def test_a_bad_payload_is_rejected_with_the_reason_and_its_exact_bytes(payload: bytes, reason: str) -> None:
    out = mapper(sub(time="ts")).map("plant/s/d/t", payload, NOW_MS)
    assert out.readings == []
    [rejected] = out.rejected
    assert reason in rejected.reason
    assert rejected.raw == payload
    assert rejected.origin == "mqtt://127.0.0.1:1883/plant/s/d/t"


def test_an_iso_time_without_zone_and_an_oversize_payload_are_rejected() -> None:
    s = sub(time="at", time_format="iso8601")
    [rejected] = mapper(s).map("plant/s/d/t", b'{"value": 1, "at": "2024-06-01T12:00:00"}', NOW_MS).rejected
    assert "no time zone" in rejected.reason
    big = b'{"value": 1, "pad": "' + b"x" * 5000 + b'"}'
    [rejected] = mapper(s, max_payload_bytes=1024).map("plant/s/d/t", big, NOW_MS).rejected
    assert "larger than max_payload_bytes=1024" in rejected.reason
    assert (rejected.raw, rejected.size) == (big[:1024], len(big))


def test_one_bad_field_of_several_is_rejected_and_the_others_still_become_readings() -> None:
    s = Subscription(topic="x/{device_id}", fields={"a": "a", "b": "b"})
    out = mapper(s).map("x/d", b'{"a": 1, "b": "n/a"}', NOW_MS)
    assert [r.metric for r in out.readings] == ["a"]
    [rejected] = out.rejected
    assert "metric 'b'" in rejected.reason and rejected.raw == b'{"a": 1, "b": "n/a"}'


def test_a_topic_no_subscription_matches_is_rejected() -> None:
    [rejected] = mapper(sub()).map("elsewhere/x", b"{}", NOW_MS).rejected
    assert "matches no subscription" in rejected.reason


# ---------------------------------------------------------------------- settings

def test_the_sample_conf_loads_and_needs_a_client_id(tmp_path: Path) -> None:
    assert plugin.sample_conf is not None
    settings = plugin.load_settings(plugin.sample_conf, environ={})
    assert isinstance(settings, MqttSettings)
    assert (settings.qos, settings.protocol, settings.runner.flush_interval_s) == (1, "5", 0.2)
    assert [s.mqtt_filter() for s in settings.subscription] == ["plant/+/+/+", "sensors/+/+/state", "meters/+/power"]
    conf = tmp_path / "x.conf"
    conf.write_text('[mqtt]\n[[mqtt.subscription]]\ntopic = "a/{device_id}/{metric}"\n')
    with pytest.raises(PluginConfigError, match=r"mqtt\.client_id"):
        plugin.load_settings(conf, environ={})
    env = {"MW_MQTT_CLIENT_ID": "c1", "MW_MQTT_PASSWORD": "s3cret", "MW_MQTT_PORT": "2883"}
    settings = plugin.load_settings(conf, environ=env)
    assert (settings.client_id, settings.port) == ("c1", 2883)
    assert "s3cret" not in repr(settings)


# ---------------------------------------------------------------------- acknowledgements

class FakeClient:
    def __init__(self) -> None:
        self.acks: list[tuple[int, int]] = []

    def ack(self, mid: int, qos: int) -> int:
        self.acks.append((mid, qos))
        return 0


def source(tmp_path: Path) -> MqttSource:
    conf = tmp_path / "x.conf"
    conf.write_text('[mqtt]\nclient_id = "c1"\n[[mqtt.subscription]]\ntopic = "p/{device_id}/{metric}"\n'
                    'time = "ts"\n')
    src = MqttSource(plugin.load_settings(conf, environ={}))  # type: ignore[arg-type]
    src.client = FakeClient()
    src._generation = 1
    return src


def put(src: MqttSource, mid: int, payload: bytes, qos: int = 1, generation: int = 1) -> None:
    src._queue.put(_Message("p/d1/temp", payload, qos, mid, generation, NOW_MS))


def test_only_committed_messages_are_acknowledged_in_the_order_they_arrived(tmp_path: Path) -> None:
    src = source(tmp_path)
    for mid in (5, 3, 9):
        put(src, mid, json.dumps({"value": mid, "ts": NOW_MS + mid}).encode())
    put(src, 11, b"not json")  # a rejected message is acknowledged too, once its dead letter is flushed
    batch = src.poll(0.01)
    assert (len(batch.records), len(batch.rejected), batch.checkpoint) == (3, 1, 4)
    assert src.lag() == 4
    src.commit(2)
    assert src.client.acks == [(5, 1), (3, 1)]
    src.commit(batch.checkpoint)
    assert src.client.acks == [(5, 1), (3, 1), (9, 1), (11, 1)]
    assert src.lag() == 0
    assert src.poll(0.01).checkpoint is None


def test_messages_of_an_earlier_connection_and_qos_0_are_not_acknowledged(tmp_path: Path) -> None:
    src = source(tmp_path)
    put(src, 1, b'{"value": 1, "ts": 1717171700000}', generation=1)
    put(src, 2, b'{"value": 2, "ts": 1717171701000}', qos=0)
    batch = src.poll(0.01)
    src._generation = 2  # reconnected: mid 1 is sent again by the broker, and may name another message by now
    src.commit(batch.checkpoint)
    assert src.client.acks == []
    assert src.stale_acks == 1


def test_poll_takes_at_most_max_batch_messages(tmp_path: Path) -> None:
    src = source(tmp_path)
    src.max_batch = 2
    for mid in range(1, 6):
        put(src, mid, json.dumps({"value": mid, "ts": NOW_MS + mid}).encode())
    assert [src.poll(0.01).checkpoint for _ in range(4)] == [2, 4, 5, None]
