"""What the processes of a test's stack expose (descendants, command lines, listening sockets); CPU stress."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterable
from pathlib import Path


def _stat(pid: int) -> tuple[int, int] | None:
    """(ppid, session id) of a live process, None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return int(fields[1]), int(fields[3])


def all_pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def family(roots: Iterable[int]) -> set[int]:
    """``roots`` and every live process descending from them or sharing a root's session."""
    roots = set(roots)
    stats = {pid: st for pid in all_pids() if (st := _stat(pid)) is not None}
    found = {pid for pid in roots if pid in stats}
    found |= {pid for pid, (_ppid, sid) in stats.items() if sid in roots}
    grew = True
    while grew:
        more = {pid for pid, (ppid, _sid) in stats.items() if ppid in found and pid not in found}
        found |= more
        grew = bool(more)
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return ""


class CmdlineSampler:
    """Records every distinct command line on the machine while it runs (a short-lived tool included).

    Reading /proc every ``every`` seconds catches a process that lives longer than that, e.g. a JVM tool
    that runs for a second or two; secrets are then looked for in everything seen.
    """

    def __init__(self, every: float = 0.02) -> None:
        self.every = every
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cmdline-sampler", daemon=True)
        self.scans = 0

    def _run(self) -> None:
        me = os.getpid()
        while not self._stop.is_set():
            for pid in all_pids():
                if pid != me:
                    line = cmdline(pid)
                    if line:
                        self.seen.add(line)
            self.scans += 1
            self._stop.wait(self.every)

    def __enter__(self) -> CmdlineSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def leaks(self, secrets: dict[str, str]) -> list[str]:
        """Names of the secrets that appeared in a command line, with the start of that line."""
        return [f"{name} in: {line[:120]}..." for line in self.seen for name, value in secrets.items()
                if len(value) >= 8 and value in line]


def listening_inodes() -> dict[str, str]:
    """inode -> 'address:port' of every listening TCP socket (IPv4 and IPv6)."""
    out = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A":  # LISTEN
                continue
            addr_hex, port_hex = local.split(":")
            if len(addr_hex) == 8:
                addr = ".".join(str(int(addr_hex[i:i + 2], 16)) for i in (6, 4, 2, 0))
            else:
                words = [addr_hex[i:i + 8] for i in range(0, 32, 8)]
                raw = b"".join(bytes.fromhex(w)[::-1] for w in words)
                addr = "::ffff:" + ".".join(str(b) for b in raw[12:]) if raw[:12] == b"\0" * 10 + b"\xff" * 2 else (
                    "::1" if raw == b"\0" * 15 + b"\x01" else raw.hex())
            out[inode] = f"{addr}:{int(port_hex, 16)}"
    return out


def listening_sockets(pids: Iterable[int]) -> list[tuple[int, str]]:
    """(pid, address) of every listening socket the given processes hold open."""
    sockets = listening_inodes()
    seen = []
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except (FileNotFoundError, PermissionError):
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            match = re.fullmatch(r"socket:\[(\d+)\]", target)
            if match and match[1] in sockets:
                seen.append((pid, sockets[match[1]]))
    return seen


# A competing busy process: spins until stopped, and by itself as soon as its parent is gone (a killed
# test run leaves nothing spinning).
_SPIN = "import os\nparent = os.getppid()\nwhile os.getppid() == parent:\n    sum(range(200_000))\n"


class CpuStress:
    """``n`` busy processes competing for the CPU for as long as the ``with`` block runs."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> CpuStress:
        self.procs = [subprocess.Popen([sys.executable, "-c", _SPIN]) for _ in range(self.n)]  # noqa: S603
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            proc.kill()
        for proc in self.procs:
            proc.wait(timeout=10)
