"""What the benchmarks measure besides counts: RSS and CPU of process trees from /proc, and the arithmetic on
them (percentiles, GiB)."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

PAGE = os.sysconf("SC_PAGE_SIZE")
CLK_TCK = os.sysconf("SC_CLK_TCK")


class RssSampler:
    """Samples the RSS of the stack's process trees (server pids and all their descendants) every 0.5 s."""

    def __init__(self, roots: Callable[[], dict[str, int | None]]) -> None:
        self.roots = roots
        self.peak_total = 0
        self.peak_by: dict[str, int] = {}
        self.phase_peak: dict[str, int] = {}
        self.phase = "start"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            with contextlib.suppress(Exception):
                self.sample()

    def sample(self) -> None:
        children: dict[int, list[int]] = {}
        rss: dict[int, int] = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text()
                statm = Path(f"/proc/{entry.name}/statm").read_text().split()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            pid = int(entry.name)
            children.setdefault(ppid, []).append(pid)
            rss[pid] = int(statm[1]) * PAGE
        total = 0
        for name, root in self.roots().items():
            if root is None:
                continue
            tree, todo = 0, [root]
            while todo:
                pid = todo.pop()
                tree += rss.get(pid, 0)
                todo.extend(children.get(pid, []))
            self.peak_by[name] = max(self.peak_by.get(name, 0), tree)
            total += tree
        self.peak_total = max(self.peak_total, total)
        self.phase_peak[self.phase] = max(self.phase_peak.get(self.phase, 0), total)


    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds (user + system, incl. reaped children) used so far by each server's process tree."""
        children: dict[int, list[int]] = {}
        cpu: dict[int, float] = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                fields = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            pid = int(entry.name)
            children.setdefault(int(fields[1]), []).append(pid)
            cpu[pid] = sum(int(x) for x in fields[11:15]) / CLK_TCK  # utime stime cutime cstime
        out = {}
        for name, root in self.roots().items():
            todo, total = [root] if root is not None else [], 0.0
            while todo:
                pid = todo.pop()
                total += cpu.get(pid, 0.0)
                todo.extend(children.get(pid, []))
            out[name] = total
        return out


def cpu_use(before: dict[str, float], after: dict[str, float], seconds: float, events: int) -> dict[str, Any]:
    """Average cores each tree used between two cpu_seconds() readings, and CPU-s per million events."""
    used = {k: after.get(k, 0.0) - v for k, v in before.items()}
    total = sum(used.values())
    return {"cores": {k: round(v / seconds, 2) for k, v in used.items()}, "cores_total": round(total / seconds, 2),
            "cpu_s_per_million_events": round(total / max(events, 1) * 1e6, 1)}


def cpu_note(r: dict[str, Any]) -> str:
    c = r.get("cpu")
    if not c:
        return ""
    tm, kafka = c["cores"].get("flink-taskmanager", 0), c["cores"].get("kafka", 0)
    return (f"; CPU {c['cores_total']:.2f} cores (TaskManager incl. Python {tm:.2f}, Kafka {kafka:.2f}), "
            f"{c['cpu_s_per_million_events']:.0f} CPU-s per million events")


def gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def tree_rss(root: int) -> int:
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()
            if int(entry.name) == root or int(stat[2]) == root:  # process group of the session we started
                total += int(Path(f"/proc/{entry.name}/statm").read_text().split()[1]) * PAGE
    return total


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
