"""Settings for a private stack: free loopback ports and its own state dir (tests, faults, benchmarks).

Such a stack never meets the dev stack or a remote one: remote addresses and tokens given in the
environment are ignored, so the stack's own servers and token files are used. Its servers die with the
process that started them, even when that process is SIGKILLed (watchdog.py).
"""

from __future__ import annotations

import socket
from pathlib import Path

from machinewatch.config import Settings, load_settings


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports that were free a moment ago (all held open while picking)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def private_settings(state: Path, **extra: object) -> Settings:
    """Settings of a private stack in ``state`` on free ports; ``extra`` overrides any other setting."""
    brokers = int(extra.get("kafka_brokers", 1))  # type: ignore[call-overload]
    kafka, controller, rest, rpc, influx, mqtt, *nodes = free_ports(6 + 2 * (brokers - 1))
    return load_settings(
        state_dir=state, kafka_port=kafka, kafka_controller_port=controller, kafka_node_ports=nodes,
        flink_rest_port=rest,
        flink_rpc_port=rpc, influx_port=influx, mosquitto_port=mqtt, kafka_bootstrap=None, flink_rest_address=None,
        influx_url=None,
        influx_token=None, influx_write_token=None, influx_read_token=None,
        **{"die_with_parent": True, **extra},
    )
