"""Windows Performance Monitor simulator: PDH-CSV 4.0 files as a data collector set writes them.

Per host one file at a time under ``<out_dir>/<HOST>_<yyyymmdd>-<NNNNNN>/DataCollector01.csv``:
quoted fields, CRLF, the ``(PDH-CSV 4.0) (<zone>)(<offset>)`` header, ``\\\\HOST\\Object(Instance)\\Counter``
columns, ``" "`` for samples PerfMon has not taken yet (rate counters in the first row), rolling to a
new file every ``rows_per_file`` rows. Deterministic for a seed; spikes, silences (no rows for a
while) and corrupt cells can be injected. Counter names come in English, Italian or Russian.
"""

from __future__ import annotations

import argparse
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import IO

from pydantic import Field

from machinewatch.config import Settings
from machinewatch.plugins import PluginSettings, SimulatorPlugin, duration_arg

# (object, instance, counter, kind) per locale; kind picks the value generator.
LOCALES: dict[str, tuple[tuple[str, str, str, str], ...]] = {
    "en": (
        ("Processor", "_Total", "% Processor Time", "cpu"),
        ("Memory", "", "Available MBytes", "mem"),
        ("LogicalDisk", "C:", "Avg. Disk Queue Length", "queue"),
        ("Network Interface", "Ethernet", "Bytes Total/sec", "net"),
        ("System", "", "Processor Queue Length", "runq"),
    ),
    "it": (
        ("Processore", "_Total", "% Tempo processore", "cpu"),
        ("Memoria", "", "MByte disponibili", "mem"),
        ("Disco logico", "C:", "Lunghezza media coda del disco", "queue"),
        ("Interfaccia di rete", "Ethernet", "Byte totali/sec", "net"),
        ("Sistema", "", "Lunghezza coda processore", "runq"),
    ),
    "ru": (
        ("Процессор", "_Total", "% загруженности процессора", "cpu"),
        ("Память", "", "Доступно МБ", "mem"),
        ("Логический диск", "C:", "Средняя длина очереди диска", "queue"),
        ("Сетевой интерфейс", "Ethernet", "Всего байт/с", "net"),
        ("Система", "", "Длина очереди процессора", "runq"),
    ),
}
# Averaged and rate counters need two samples, so PerfMon leaves their first row blank.
_NEEDS_TWO_SAMPLES = {"queue", "net"}
CORRUPT_CELL = "-nan(ind)"  # what a broken provider prints; not a number


def counter_paths(host: str, locale: str = "en") -> list[str]:
    return [
        f"\\\\{host}\\{obj}({inst})\\{counter}" if inst else f"\\\\{host}\\{obj}\\{counter}"
        for obj, inst, counter, _ in LOCALES[locale]
    ]


@dataclass
class _HostStream:
    host: str
    rng: random.Random
    cpu: float = 20.0
    mem: float = 4096.0
    step: int = 0  # samples taken (including silent ones)
    serial: int = 0
    rows_in_file: int = 0
    fh: IO[str] | None = None
    path: Path | None = None


@dataclass
class PerfmonSimulator:
    """Writes PDH-CSV 4.0 files for ``hosts`` into ``out_dir``, one sample every ``interval_s``."""

    out_dir: Path
    hosts: list[str] = field(default_factory=lambda: ["SRV-0001"])
    interval_s: float = 15.0
    rows_per_file: int = 240
    seed: int = 1
    zone_name: str = "W. Europe Standard Time"
    offset_minutes: int = -60  # Windows bias: UTC = local + offset
    locale: str = "en"
    encoding: str = "utf-8"
    spike_rate: float = 0.0  # probability per sample and host: CPU at 100 %, disk queue x50
    # (host index or -1 for all, first sample, samples): the collector writes no rows (a gap in time).
    silences: list[tuple[int, int, int]] = field(default_factory=list)
    corrupt_every: int = 0  # every Nth sample: the CPU cell is not a number (dead-letter tests)
    collector: str = "DataCollector01"
    _streams: dict[str, _HostStream] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.locale not in LOCALES:
            msg = f"locale {self.locale!r} is not one of {', '.join(LOCALES)}"
            raise ValueError(msg)
        if self.rows_per_file < 1 or self.interval_s <= 0:
            msg = "rows_per_file must be >= 1 and interval_s > 0"
            raise ValueError(msg)
        self.out_dir = Path(self.out_dir)
        for host in self.hosts:
            # String seeds are hashed deterministically, so each host has its own repeatable stream.
            self._streams[host] = _HostStream(host, random.Random(f"{self.seed}:{host}"))

    @property
    def tz(self) -> timezone:
        return timezone(timedelta(minutes=-self.offset_minutes))

    def header(self, host: str) -> str:
        cells = [f"(PDH-CSV 4.0) ({self.zone_name})({self.offset_minutes})", *counter_paths(host, self.locale)]
        return ",".join(f'"{c}"' for c in cells) + "\r\n"

    def _silent(self, host_index: int, step: int) -> bool:
        return any(
            host in (-1, host_index) and start <= step < start + length for host, start, length in self.silences
        )

    def _values(self, stream: _HostStream, first_in_file: bool) -> list[str]:
        rng, step = stream.rng, stream.step
        spike = rng.random() < self.spike_rate
        stream.cpu = min(95.0, max(1.0, stream.cpu + rng.gauss(0, 4)))
        stream.mem = min(16000.0, max(256.0, stream.mem + rng.gauss(0, 40)))
        gen: dict[str, Callable[[], str]] = {
            "cpu": lambda: repr(round(100.0 if spike else stream.cpu, 6)),
            "mem": lambda: str(int(stream.mem)),
            "queue": lambda: repr(round(abs(rng.gauss(0, 0.05)) * (50 if spike else 1), 9)),
            "net": lambda: repr(round(rng.lognormvariate(11, 0.6), 3)),
            "runq": lambda: str(rng.randrange(0, 4)),
        }
        cells = []
        for _, _, _, kind in LOCALES[self.locale]:
            value = gen[kind]()  # always drawn, so blanks do not shift the random stream
            if first_in_file and kind in _NEEDS_TWO_SAMPLES:
                value = " "
            elif kind == "cpu" and self.corrupt_every and step > 0 and step % self.corrupt_every == 0:
                value = CORRUPT_CELL
            cells.append(value)
        return cells

    def _row(self, stream: _HostStream, moment: datetime) -> str | None:
        """The next sample of a host as a CSV line, or None while the collector is silent."""
        silent = self._silent(self.hosts.index(stream.host), stream.step)
        jitter_ms = stream.rng.randrange(-8, 9)
        values = self._values(stream, first_in_file=stream.rows_in_file == 0)
        stream.step += 1
        if silent:
            return None
        local = (moment + timedelta(milliseconds=jitter_ms)).astimezone(self.tz)
        stamp = local.strftime("%m/%d/%Y %H:%M:%S.") + f"{local.microsecond // 1000:03d}"
        return ",".join(f'"{c}"' for c in [stamp, *values]) + "\r\n"

    def _open(self, stream: _HostStream, moment: datetime) -> None:
        stream.serial += 1
        local = moment.astimezone(self.tz)
        folder = self.out_dir / f"{stream.host}_{local:%Y%m%d}-{stream.serial:06d}"
        folder.mkdir(parents=True, exist_ok=True)
        stream.path = folder / f"{self.collector}.csv"
        # newline="" keeps our CRLF as written; a text stream writes a UTF-16 BOM only once, at the start.
        stream.fh = stream.path.open("w", encoding=self.encoding, newline="")
        stream.fh.write(self.header(stream.host))
        stream.rows_in_file = 0

    def _close(self, stream: _HostStream) -> Path | None:
        if stream.fh is None:
            return None
        stream.fh.close()
        stream.fh = None
        return stream.path

    def sample(self, moment: datetime) -> list[Path]:
        """Take one sample of every host at ``moment``; returns the files this finished (rolled)."""
        if moment.tzinfo is None:
            msg = "moment must be timezone-aware"
            raise ValueError(msg)
        finished = []
        for stream in self._streams.values():
            if stream.fh is None:
                self._open(stream, moment)
            line = self._row(stream, moment)
            if line is None:
                continue
            assert stream.fh is not None
            stream.fh.write(line)
            stream.fh.flush()
            stream.rows_in_file += 1
            if stream.rows_in_file >= self.rows_per_file:
                path = self._close(stream)
                if path is not None:
                    finished.append(path)
        return finished

    def close(self) -> list[Path]:
        """Close the files being written (a stopped collector set leaves them finished)."""
        return [p for p in (self._close(s) for s in self._streams.values()) if p is not None]

    def write_files(self, start: datetime, files: int) -> list[Path]:
        """Backfill: ``files`` complete files per host, event time from ``start``, as fast as possible."""
        if start.tzinfo is None:
            msg = "start must be timezone-aware"
            raise ValueError(msg)
        done: list[Path] = []
        step = 0
        target = files * len(self.hosts)
        # Silences produce no rows, so count finished files rather than samples.
        while len(done) < target:
            done += self.sample(start + timedelta(seconds=step * self.interval_s))
            step += 1
        return done

    def live(self, speed: float = 1.0, duration_s: float | None = None,
             on_file: Callable[[Path], None] | None = None) -> list[Path]:
        """Sample every ``interval_s / speed`` wall seconds (event time advances ``interval_s``) until duration."""
        start_wall = time.monotonic()
        start = datetime.now(tz=UTC)
        done: list[Path] = []
        step = 0
        try:
            while duration_s is None or time.monotonic() - start_wall < duration_s:
                for path in self.sample(start + timedelta(seconds=step * self.interval_s)):
                    done.append(path)
                    if on_file:
                        on_file(path)
                step += 1
                delay = start_wall + step * self.interval_s / speed - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
        finally:
            done += self.close()
        return done


# -- ``machinewatch simulate perfmon`` (the plugin registered under ``machinewatch.simulators``) ----------------


class PerfmonSimSettings(PluginSettings):
    """PerfMon PDH-CSV files for 'ingest perfmon': where, which hosts, how often, and what goes wrong."""

    out_dir: Path | None = Field(None, description="the folder the PerfMon watcher watches (required)")
    hosts: str = Field("1", description="a number of hosts (PERFMON-0001 ...) or comma-separated host names")
    interval_s: float = Field(15.0, gt=0, description="sample interval in seconds")
    rows_per_file: int = Field(240, ge=1, description="roll to a new file after this many rows")
    files: int = Field(0, ge=0, description="backfill this many complete files per host ending now (0 = live)")
    zone: str = Field("W. Europe Standard Time", description="time zone name in the header")
    offset_minutes: int = Field(-60, description="header offset in minutes, UTC = local + offset")
    locale: str = Field("en", description="language of counter names")
    encoding: str = Field("utf-8", description="file encoding, e.g. utf-8, utf-16, cp1251")
    corrupt_every: int = Field(0, ge=0, description="every Nth sample writes a non-number CPU cell")
    seed: int = Field(1, description="random seed")
    speed: float = Field(1.0, gt=0, description="playback speed for live mode")
    duration: timedelta | None = Field(None, description="stop live mode after this long")
    silence: list[str] = Field(default_factory=list, description="HOST_INDEX:START_S:LEN_S silences")
    spike_rate: float = Field(0.0, ge=0, le=1, description="probability of a spike per sample")


def add_arguments(parser: argparse._ActionsContainer) -> None:
    """The flags of ``machinewatch simulate perfmon``."""
    g = parser.add_argument_group("perfmon", "options of 'simulate perfmon' (writes PDH-CSV 4.0 files, not Kafka)")
    g.add_argument("--out-dir", type=Path, help="the folder the PerfMon watcher watches (required)")
    g.add_argument("--hosts", help="a number of hosts (PERFMON-0001 ...) or comma-separated host names (default 1)")
    g.add_argument("--interval-s", type=float, help="sample interval in seconds (default 15)")
    g.add_argument("--rows-per-file", type=int, help="roll to a new file after this many rows (default 240)")
    g.add_argument("--files", type=int,
                   help="backfill this many complete files per host ending now, then exit "
                   "(default 0 = live: a row every interval-s/speed seconds until --duration or Ctrl-C)")
    g.add_argument("--zone", help="time zone name in the header (default 'W. Europe Standard Time')")
    g.add_argument("--offset-minutes", type=int,
                   help="header offset in minutes, UTC = local + offset (default -60, i.e. UTC+1)")
    g.add_argument("--locale", choices=sorted(LOCALES), help="language of counter names (default en)")
    g.add_argument("--encoding", help="file encoding, e.g. utf-8, utf-16, cp1251 (default utf-8)")
    g.add_argument("--corrupt-every", type=int,
                   help="every Nth sample writes a non-number CPU cell (dead-letter testing)")
    g.add_argument("--seed", type=int, help="random seed (default 1)")
    g.add_argument("--speed", type=float, help="playback speed for live mode (default 1.0)")
    g.add_argument("--duration", type=duration_arg, help="stop live mode after this long, e.g. 2m")
    g.add_argument("--silence", action="append", metavar="HOST_INDEX:START_S:LEN_S",
                   help="host HOST_INDEX (0-based, or *) writes no rows; repeatable")
    g.add_argument("--spike-rate", type=float, help="probability of a spike per sample (default 0)")


def _hosts(text: str) -> list[str]:
    if text.strip().isdigit():
        return [f"PERFMON-{i:04d}" for i in range(1, int(text) + 1)]
    return [h.strip() for h in text.split(",") if h.strip()]


def _silences(specs: list[str], interval_s: float) -> list[tuple[int, int, int]]:
    out = []
    for spec in specs:
        try:
            dev, start_s, length_s = spec.split(":")
            out.append((int(dev) if dev not in ("", "*") else -1, int(float(start_s) / interval_s),
                        max(1, int(float(length_s) / interval_s))))
        except ValueError as exc:
            msg = f"--silence {spec!r} is not HOST_INDEX:START_S:LEN_S (HOST_INDEX 0-based or *)"
            raise ValueError(msg) from exc
    return out


def run(args: PerfmonSimSettings, _settings: Settings | None = None) -> int:
    """Write PerfMon files as ``machinewatch simulate perfmon`` was asked to (no Kafka: no settings needed)."""
    log = logging.getLogger("machinewatch.simulate.perfmon")
    if args.out_dir is None:
        msg = "simulate perfmon needs --out-dir (the folder the PerfMon watcher watches)"
        raise RuntimeError(msg)
    try:
        sim = PerfmonSimulator(
            out_dir=args.out_dir, hosts=_hosts(args.hosts), interval_s=args.interval_s,
            rows_per_file=args.rows_per_file, seed=args.seed, zone_name=args.zone,
            offset_minutes=args.offset_minutes, locale=args.locale, encoding=args.encoding,
            spike_rate=args.spike_rate,
            silences=_silences(args.silence, args.interval_s),
            corrupt_every=args.corrupt_every,
        )
    except (ValueError, LookupError) as exc:
        raise RuntimeError(str(exc)) from exc
    if args.files:
        span = timedelta(seconds=args.files * args.rows_per_file * args.interval_s)
        paths = sim.write_files(datetime.now(tz=UTC) - span, args.files)
        log.info("wrote %d files into %s", len(paths), args.out_dir)
        return 0
    duration = args.duration.total_seconds() if args.duration else None
    log.info("writing a row per host every %.3g s into %s (Ctrl-C to stop)", args.interval_s / args.speed,
             args.out_dir)
    paths = sim.live(speed=args.speed, duration_s=duration, on_file=lambda p: log.info("finished %s", p))
    log.info("wrote %d files", len(paths))
    return 0


plugin = SimulatorPlugin(
    name="perfmon",
    summary="Windows PerfMon PDH-CSV files into --out-dir, for 'ingest perfmon'",
    description="Writes PerfMon PDH-CSV 4.0 files as Windows' performance monitor does (localised counter "
    "names, a time zone header, file roll-over), a backfill of --files or live rows, with silences, spikes and "
    "corrupt cells to test the watcher. No Kafka.",
    settings_model=PerfmonSimSettings,
    run=run,
    add_arguments=add_arguments,
    sample_conf=Path(__file__).resolve().parent / "sample.conf",
)
