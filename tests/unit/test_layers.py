"""The layers of docs/ARCHITECTURE.md, checked over every module: the core imports nothing above it,
stages import only the core (never each other, never the composition root).

The composition root is the modules of machinewatch/ named in ROOT; everything else in machinewatch/ is
the core. A collector plugin may use the ingest stage's shared decoders (``ingest.formats``), never
another plugin.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROOT = ("machinewatch.cli", "machinewatch.__main__", "machinewatch.demo", "machinewatch.jobs", "machinewatch.stack")
STAGES = ("simulators", "ingest", "flink_jobs", "sinks", "dashboards")
OURS = ("machinewatch", *STAGES, "bench", "tests")
SHARED_IN_INGEST = "ingest.formats"


def _module(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _within(name: str, prefixes: tuple[str, ...] | str) -> bool:
    prefixes = (prefixes,) if isinstance(prefixes, str) else prefixes
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _imports(path: Path) -> set[str]:
    """Absolute names a module imports (``from a import b`` gives ``a`` and ``a.b``); relative imports resolved."""
    package = _module(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return {name for name in found if name.split(".")[0] in OURS}


def _modules(top: str) -> list[Path]:
    return sorted((REPO / top).rglob("*.py"))


def _stray(module: str, imported: set[str]) -> list[str]:
    """What ``module`` imports that its layer may not."""
    if _within(module, "machinewatch"):
        if _within(module, ROOT):
            return []  # the composition root may import everything
        return sorted(n for n in imported if not _within(n, "machinewatch") or _within(n, ROOT))
    top = module.split(".")[0]
    # A collector plugin is its own folder: it may use itself and the stage's shared decoders.
    allowed = (".".join(module.split(".")[:2]), SHARED_IN_INGEST) if top == "ingest" and "." in module else (top,)
    out = []
    for name in imported:
        if _within(name, "machinewatch"):
            if _within(name, ROOT):
                out.append(name)
        elif name != "ingest" and not _within(name, allowed):  # bare ``ingest``: ``from ingest import x`` names x
            out.append(name)
    return sorted(out)


@pytest.mark.parametrize("top", ["machinewatch", *STAGES])
def test_no_module_imports_above_its_layer(top: str) -> None:
    problems = {}
    for path in _modules(top):
        module = _module(path)
        stray = _stray(module, _imports(path))
        if stray:
            problems[module] = stray
    assert not problems, f"imports across layers: {problems}"


@pytest.mark.parametrize(("module", "imported", "stray"), [
    ("machinewatch.record", {"machinewatch.names"}, []),
    ("machinewatch.query", {"machinewatch.stack.procs"}, ["machinewatch.stack.procs"]),
    ("machinewatch.runtime", {"sinks.notifier"}, ["sinks.notifier"]),
    ("machinewatch.cli", {"sinks.notifier", "ingest.tcp"}, []),
    ("sinks.notifier", {"machinewatch.kafka_io", "sinks.influxdb_writer"}, []),
    ("sinks.notifier", {"ingest.formats"}, ["ingest.formats"]),
    ("sinks.notifier", {"machinewatch.jobs"}, ["machinewatch.jobs"]),
    ("ingest.tcp.listener", {"ingest.formats", "ingest.formats.Mapping", "ingest.tcp.config"}, []),
    ("ingest.tcp.listener", {"ingest.history.loader"}, ["ingest.history.loader"]),
    ("simulators.feed", {"flink_jobs.rules"}, ["flink_jobs.rules"]),
])
def test_the_rule_itself(module: str, imported: set[str], stray: list[str]) -> None:
    """The checker would catch each kind of crossing (a test of the test: it can fail)."""
    assert _stray(module, imported) == stray
