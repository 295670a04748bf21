"""The simulated machines and the agent's memory: CNC data items, their observations, how a spindle behaves
from step to step, and the ring buffer with first/next sequence and the ground truth of everything produced."""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

OVERHEAT_WARNING_C = 60.0
OVERHEAT_FAULT_C = 75.0


@dataclass(frozen=True, slots=True)
class ItemSpec:
    """One data item of a simulated device (the /probe declaration)."""

    id: str
    name: str
    category: str  # SAMPLE | EVENT | CONDITION
    type: str
    component: str  # name of the component it belongs to
    component_type: str  # Device, Controller, Path, Rotary, Linear
    sub_type: str = ""
    units: str = ""

    @property
    def element(self) -> str:
        return "".join(part.capitalize() for part in self.type.split("_"))


@dataclass(frozen=True, slots=True)
class Obs:
    """One observation in the agent's buffer."""

    instance_id: int
    sequence: int
    device: str
    item: ItemSpec
    ts: int  # epoch ms
    value: str  # text; for conditions the message
    level: str = ""  # condition level: NORMAL/WARNING/FAULT/UNAVAILABLE

    @property
    def unavailable(self) -> bool:
        return self.value == "UNAVAILABLE" or self.level == "UNAVAILABLE"


@dataclass
class DeviceState:
    """One simulated CNC: its data items and the physical state the next step starts from."""

    name: str
    uuid: str
    items: dict[str, ItemSpec]
    rpm: float = 0.0
    load: float = 0.0
    temp: float = 30.0
    pos: dict[str, float] = field(default_factory=lambda: {"X": 0.0, "Y": 0.0, "Z": 0.0})
    available: bool = True
    estop: bool = False
    overheat_rounds: int = 0
    overheat_extra: float = 0.0
    temp_level: str = "NORMAL"


# The name it had when the simulator was one module.
_DeviceState = DeviceState

# emit(device, item role, value, condition level): how the model reports an observation to the agent.
Emit = Callable[[DeviceState, str, str, str], None]


def device_items(device: str) -> dict[str, ItemSpec]:
    """The data items of one simulated CNC, keyed by a short role name."""
    d = device
    specs = [
        ("avail", ItemSpec(f"{d}-avail", "avail", "EVENT", "AVAILABILITY", d, "Device")),
        ("estop", ItemSpec(f"{d}-estop", "estop", "EVENT", "EMERGENCY_STOP", "controller", "Controller")),
        ("system", ItemSpec(f"{d}-system", "system", "CONDITION", "SYSTEM", "controller", "Controller")),
        ("mode", ItemSpec(f"{d}-mode", "mode", "EVENT", "CONTROLLER_MODE", "path", "Path")),
        ("execution", ItemSpec(f"{d}-execution", "execution", "EVENT", "EXECUTION", "path", "Path")),
        ("rpm", ItemSpec(f"{d}-Srpm", "Srpm", "SAMPLE", "ROTARY_VELOCITY", "C", "Rotary", "ACTUAL",
                         "REVOLUTION/MINUTE")),
        ("load", ItemSpec(f"{d}-Sload", "Sload", "SAMPLE", "LOAD", "C", "Rotary", "", "PERCENT")),
        ("temp", ItemSpec(f"{d}-Stemp", "Stemp", "SAMPLE", "TEMPERATURE", "C", "Rotary", "", "CELSIUS")),
        ("temp_cond", ItemSpec(f"{d}-Stemp_cond", "Stemp_cond", "CONDITION", "TEMPERATURE", "C", "Rotary")),
    ]
    for axis in ("X", "Y", "Z"):
        specs.append((f"pos{axis}", ItemSpec(f"{d}-{axis}pos", f"{axis}position", "SAMPLE", "POSITION", axis,
                                             "Linear", "ACTUAL", "MILLIMETER")))
    return dict(specs)


def make_devices(count: int, prefix: str) -> list[DeviceState]:
    return [DeviceState(name=f"{prefix}{i + 1:02d}", uuid=f"mtc-{prefix.lower()}-{i + 1:03d}",
                        items=device_items(f"{prefix}{i + 1:02d}"))
            for i in range(count)]


def all_unavailable(dev: DeviceState, emit: Emit, skip: str = "") -> None:
    """Every item of ``dev`` (but ``skip``) reported UNAVAILABLE, as an agent does when it loses the machine."""
    for role, spec in dev.items.items():
        if role == skip:
            continue
        if spec.category == "CONDITION":
            emit(dev, role, "", "UNAVAILABLE")
        else:
            emit(dev, role, "UNAVAILABLE", "")


def first_values(dev: DeviceState, rng: random.Random, emit: Emit) -> None:
    """The adapter's first values after the agent starts: a cold, idle, available machine."""
    dev.rpm, dev.load, dev.temp = 0.0, 0.0, 30.0 + rng.uniform(-2, 2)
    dev.available, dev.estop, dev.temp_level = True, False, "NORMAL"
    emit(dev, "avail", "AVAILABLE", "")
    emit(dev, "estop", "ARMED", "")
    emit(dev, "system", "", "NORMAL")
    emit(dev, "mode", "AUTOMATIC", "")
    emit(dev, "execution", "ACTIVE", "")
    emit(dev, "temp", f"{dev.temp:.2f}", "")
    emit(dev, "temp_cond", "", "NORMAL")


def step_device(dev: DeviceState, rng: random.Random, emit: Emit) -> None:
    """One step of a running machine: spindle speed and load, temperature (and its condition), a move."""
    target_rpm = 0.0 if dev.estop or rng.random() >= 0.7 else 8000.0
    dev.rpm = max(0.0, dev.rpm + (target_rpm - dev.rpm) * 0.2 + rng.gauss(0, 40))
    emit(dev, "rpm", f"{dev.rpm:.1f}", "")
    dev.load = min(100.0, max(0.0, dev.rpm / 120 + rng.gauss(0, 3)))
    emit(dev, "load", f"{dev.load:.1f}", "")
    extra = 0.0
    if dev.overheat_rounds > 0:
        dev.overheat_rounds -= 1
        extra = dev.overheat_extra
    dev.temp += (30.0 + dev.load * 0.2 + extra - dev.temp) * 0.3 + rng.gauss(0, 0.2)
    emit(dev, "temp", f"{dev.temp:.2f}", "")
    level = "FAULT" if dev.temp >= OVERHEAT_FAULT_C else "WARNING" if dev.temp >= OVERHEAT_WARNING_C else "NORMAL"
    if level != dev.temp_level:
        dev.temp_level = level
        text = "" if level == "NORMAL" else f"SPINDLE TEMPERATURE {dev.temp:.1f} C"
        emit(dev, "temp_cond", text, level)
    if not dev.estop:
        axis = rng.choice(("X", "Y", "Z"))
        dev.pos[axis] = round(dev.pos[axis] + rng.uniform(-5, 5), 3)
        emit(dev, f"pos{axis}", f"{dev.pos[axis]:.3f}", "")
    if rng.random() < 0.05 and not dev.estop:
        emit(dev, "execution", rng.choice(("ACTIVE", "READY", "FEED_HOLD", "ACTIVE")), "")


class ObservationBuffer:
    """The agent's fixed-size ring buffer with its sequence numbers, the latest observation of every item, and
    ``produced``: every observation ever made, across restarts (the ground truth tests check a connector by).

    Not locked: the agent holds its lock around every use.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.ring: deque[Obs] = deque(maxlen=size)
        # Like a real agent's checkpoint: /current shows every item's latest value, even one that left the buffer.
        self.latest: dict[str, Obs] = {}
        self.next_sequence = 1
        self.produced: list[Obs] = []

    @property
    def first_sequence(self) -> int:
        return self.ring[0].sequence if self.ring else self.next_sequence

    def add(self, instance_id: int, device: str, item: ItemSpec, ts: int, value: str, level: str) -> Obs:
        obs = Obs(instance_id, self.next_sequence, device, item, ts, value, level)
        self.next_sequence += 1
        self.ring.append(obs)
        self.latest[obs.item.id] = obs
        self.produced.append(obs)
        return obs

    def reset(self) -> None:
        """An agent restart: empty buffer and checkpoint, sequences from 1 (``produced`` is kept)."""
        self.ring.clear()
        self.latest.clear()
        self.next_sequence = 1

    def since(self, begin: int, count: int) -> list[Obs]:
        """Up to ``count`` buffered observations from sequence ``begin`` on."""
        return [o for o in self.ring if o.sequence >= begin][:count]
