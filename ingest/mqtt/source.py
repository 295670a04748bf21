"""The MQTT collector's ``runtime.Source``: a persistent paho-mqtt session whose messages are acknowledged
only after the runner has flushed their readings to Kafka.

paho's network thread puts each message on a queue; ``poll`` maps what is queued into readings and
rejects, and hands the runner a checkpoint (the count of messages taken so far). ``commit(checkpoint)``
then sends the PUBACKs of those messages, in the order they arrived. A message not acknowledged when the
collector dies stays in the broker's session and is sent again on the next connection; a message
published while the collector is away is queued there. Acknowledgements of a connection that has since
dropped are not sent on the new one: the broker sends those messages again, and their packet ids may by
then name other messages.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from ingest.mqtt.config import MqttSettings
from ingest.mqtt.mapping import MessageMapper
from machinewatch.runtime import Batch

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Message:
    topic: str
    payload: bytes
    qos: int
    mid: int
    generation: int
    received_ms: int


class MqttSource:
    """Subscribes to the configured filters with a persistent session; see the module docstring."""

    def __init__(self, config: MqttSettings, max_batch: int | None = None) -> None:
        self.name = "mqtt"
        self.config = config
        self.max_batch = max_batch or config.runner.max_batch
        self.mapper = MessageMapper(config.subscription, config.max_payload_bytes,
                                    origin_prefix=f"mqtt://{config.host}:{config.port}/")
        self.client: Any = None
        self.messages = 0
        self.acked = 0
        self.stale_acks = 0
        self._queue: queue.Queue[_Message] = queue.Queue()
        self._unacked: deque[tuple[int, int, int, int]] = deque()  # (taken, mid, qos, generation)
        self._taken = 0
        self._generation = 0
        self._lock = threading.Lock()  # generation vs. acknowledgements
        self._connected = threading.Event()

    # ------------------------------------------------------------------ runtime.Source

    def open(self) -> None:
        try:
            import paho.mqtt.client as mqtt
            from paho.mqtt.enums import CallbackAPIVersion
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties
        except ImportError as exc:
            msg = "the MQTT collector needs paho-mqtt ('pip install paho-mqtt>=2.1'; a dependency of machinewatch)"
            raise RuntimeError(msg) from exc
        cfg = self.config
        v5 = cfg.protocol == "5"
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=cfg.client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            # 3.1.1: the session outlives the connection; MQTT 5 says so with clean_start=False below.
            clean_session=None if v5 else False,
            manual_ack=True,
        )
        if cfg.username:
            client.username_pw_set(cfg.username, cfg.password.get_secret_value() if cfg.password else None)
        client.reconnect_delay_set(cfg.reconnect_min_s, cfg.reconnect_max_s)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        properties = None
        if v5:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = cfg.session_expiry_s
            properties.ReceiveMaximum = cfg.max_inflight
        self.client = client
        log.info("mqtt: connecting to %s:%d as client id %r (MQTT %s, QoS %d, %d subscriptions)", cfg.host, cfg.port,
                 cfg.client_id, cfg.protocol, cfg.qos, len(cfg.subscription))
        client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive_s,
                             clean_start=False if v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY, properties=properties)
        client.loop_start()  # paho's thread: connects, reconnects with back-off, receives
        if not self._connected.wait(cfg.connect_timeout_s):
            log.warning("mqtt: not connected to %s:%d after %.0f s; going on, paho keeps retrying", cfg.host,
                        cfg.port, cfg.connect_timeout_s)

    def poll(self, timeout_s: float) -> Batch:
        try:
            first = self._queue.get(timeout=timeout_s) if timeout_s > 0 else self._queue.get_nowait()
        except queue.Empty:
            return Batch()
        taken = [first]
        while len(taken) < self.max_batch:
            try:
                taken.append(self._queue.get_nowait())
            except queue.Empty:
                break
        batch = Batch()
        for message in taken:
            self._taken += 1
            if message.qos > 0:
                self._unacked.append((self._taken, message.mid, message.qos, message.generation))
            mapped = self.mapper.map(message.topic, message.payload, message.received_ms)
            batch.records.extend(mapped.readings)
            batch.rejected.extend(mapped.rejected)
        batch.checkpoint = self._taken
        return batch

    def commit(self, checkpoint: object) -> None:
        """Acknowledge every message taken up to ``checkpoint`` (their readings are in Kafka now)."""
        assert isinstance(checkpoint, int)
        with self._lock:
            while self._unacked and self._unacked[0][0] <= checkpoint:
                _, mid, qos, generation = self._unacked.popleft()
                if generation != self._generation:
                    self.stale_acks += 1  # received on an earlier connection: the broker sends it again
                    continue
                self.client.ack(mid, qos)
                self.acked += 1

    def close(self) -> None:
        if self.client is None:
            return
        # DISCONNECT goes out after the acknowledgements already queued; the session stays on the broker.
        self.client.disconnect()
        self.client.loop_stop()
        log.info("mqtt: disconnected: %d messages received, %d acknowledged", self.messages, self.acked)

    def lag(self) -> int:
        """Messages received and not yet acknowledged."""
        return self._queue.qsize() + len(self._unacked)

    # ------------------------------------------------------------------ paho callbacks (its thread)

    def _on_connect(self, client: Any, _userdata: Any, flags: Any, reason_code: Any, _properties: Any) -> None:
        if reason_code.is_failure:
            log.error("mqtt: broker %s:%d refused the connection: %s", self.config.host, self.config.port, reason_code)
            return
        with self._lock:
            self._generation += 1
            generation = self._generation
        if flags.session_present:
            log.info("mqtt: connected to %s:%d, session resumed (connection %d)", self.config.host, self.config.port,
                     generation)
        else:
            log.warning("mqtt: connected to %s:%d with a new session for client id %r: nothing published while "
                        "this client id was away was kept for it (first start, or its session expired)",
                        self.config.host, self.config.port, self.config.client_id)
        self._subscribe(client)
        self._connected.set()

    def _subscribe(self, client: Any) -> None:
        filters = sorted({sub.mqtt_filter() for sub in self.config.subscription})
        if self.config.protocol == "5":
            from paho.mqtt.subscribeoptions import SubscribeOptions

            # retainHandling 1: retained messages only for a subscription the session did not have yet.
            options = SubscribeOptions(qos=self.config.qos, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)
            client.subscribe([(f, options) for f in filters])
        else:
            client.subscribe([(f, self.config.qos) for f in filters])
        log.info("mqtt: subscribed to %s", ", ".join(filters))

    def _on_subscribe(self, _client: Any, _userdata: Any, _mid: int, reason_codes: Any, _properties: Any) -> None:
        refused = [str(code) for code in reason_codes if code.is_failure]
        if refused:
            log.error("mqtt: the broker refused subscriptions: %s", ", ".join(refused))
        else:
            log.info("mqtt: the broker acknowledged the subscriptions")

    def _on_connect_fail(self, _client: Any, _userdata: Any) -> None:
        log.warning("mqtt: cannot connect to %s:%d; retrying", self.config.host, self.config.port)

    def _on_disconnect(self, _client: Any, _userdata: Any, _flags: Any, reason_code: Any, _properties: Any) -> None:
        self._connected.clear()
        if reason_code.is_failure or reason_code.value != 0:
            log.warning("mqtt: connection to %s:%d lost (%s); reconnecting", self.config.host, self.config.port,
                        reason_code)

    def _on_message(self, _client: Any, _userdata: Any, message: Any) -> None:
        self.messages += 1
        try:
            topic = message.topic
        except UnicodeDecodeError:
            topic = repr(message._topic)
        self._queue.put(_Message(topic, bytes(message.payload), message.qos, message.mid, self._generation,
                                 int(time.time() * 1000)))
