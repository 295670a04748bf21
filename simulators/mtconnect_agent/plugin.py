"""``machinewatch simulate mtconnect``: the MTConnect agent simulator as a plugin (its settings and flags).

Registered as ``mtconnect`` under the ``machinewatch.simulators`` entry points. An HTTP agent, not Kafka:
``machinewatch ingest mtconnect`` reads it.
"""

from __future__ import annotations

import argparse
from datetime import timedelta
from pathlib import Path

from pydantic import Field

from machinewatch.config import Settings
from machinewatch.plugins import PluginSettings, SimulatorPlugin, duration_arg


class MTConnectSimSettings(PluginSettings):
    """The agent's address, its CNC devices, their pace and the scenarios it plays."""

    host: str = Field("127.0.0.1", description="address the agent binds")
    port: int = Field(5000, ge=0, description="agent port (0 = any free port)")
    devices: int = Field(10, ge=1, description="number of CNC machines")
    seed: int = Field(1, description="random seed")
    buffer_size: int = Field(4096, ge=1, description="observations the agent's ring buffer keeps")
    device_prefix: str = Field("CNC", description="device names are PREFIX01, PREFIX02, ...")
    interval_ms: int = Field(1000, gt=0, description="event-time step of the machines")
    speed: float = Field(1.0, gt=0, description="playback speed")
    duration: timedelta | None = Field(None, description="stop after this long")
    scenario: list[str] = Field(default_factory=list, description="KIND@SECONDS[:DEVICE] scenarios to play")


def _add_arguments(p: argparse._ActionsContainer) -> None:
    p.add_argument("--host", help="address the agent binds (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="agent port (default 5000; 0 = any free port)")
    p.add_argument("--devices", type=int, help="number of CNC machines (default 10)")
    p.add_argument("--seed", type=int, help="random seed: same seed, same observations (default 1)")
    p.add_argument("--buffer-size", type=int, help="observations the agent's ring buffer keeps (default 4096)")
    p.add_argument("--device-prefix", help="device names are PREFIX01, PREFIX02, ... (default CNC)")
    p.add_argument("--interval-ms", type=int, help="event-time step of the machines (default 1000)")
    p.add_argument("--speed", type=float, help="playback speed (default 1.0)")
    p.add_argument("--duration", type=duration_arg, help="stop after this long, e.g. 2m")
    p.add_argument("--scenario", action="append", metavar="KIND@SECONDS[:DEVICE]",
                   help="play a scenario, e.g. unavailable@30:0, available@45:0, overheat@20:1, estop@60, "
                   "release-estop@70, fault@80:1, overrun@90, restart@120; repeatable")


def run(config: MTConnectSimSettings, _settings: Settings | None = None) -> int:
    """Serve the agent until ``duration`` or Ctrl-C."""
    from simulators.mtconnect_agent import MTConnectAgentSimulator, parse_scenario, serve_forever

    try:
        script = [parse_scenario(text) for text in config.scenario]
        sim = MTConnectAgentSimulator(devices=config.devices, seed=config.seed, buffer_size=config.buffer_size,
                                      device_prefix=config.device_prefix, step_ms=config.interval_ms)
    except ValueError as exc:
        raise RuntimeError(str(exc)) from exc
    serve_forever(sim, config.host, config.port, config.interval_ms / 1000 / config.speed, script,
                  config.duration.total_seconds() if config.duration else None)
    return 0


plugin = SimulatorPlugin(
    name="mtconnect",
    summary="an HTTP MTConnect agent of CNC machines, for 'ingest mtconnect'",
    description="Serves /probe, /current and /sample of simulated CNC machines (shaped like the NIST SMS test "
    "bed's) from a ring buffer, and plays scripted scenarios: machine unavailable, overheat, emergency stop, "
    "fault, buffer overrun, agent restart.",
    settings_model=MTConnectSimSettings,
    run=run,
    add_arguments=_add_arguments,
    sample_conf=Path(__file__).resolve().parents[1] / "sample.conf",
)
