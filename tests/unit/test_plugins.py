"""The plugin registry: entry points found, the CLI built from them, one settings loader for every plugin, and a
core that imports nothing above it."""

from __future__ import annotations

import ast
import contextlib
import io
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field

from machinewatch import cli, plugins
from machinewatch.plugins import Collector, CollectorSettings, PluginConfigError, load_plugin_settings

REPO = Path(__file__).resolve().parents[2]


def test_the_mqtt_collector_is_registered_through_its_entry_point() -> None:
    found = plugins.collectors()
    assert "mqtt" in found
    assert isinstance(found["mqtt"], Collector)
    pyproject = (REPO / "pyproject.toml").read_text()
    assert '[project.entry-points."machinewatch.collectors"]' in pyproject
    assert 'mqtt = "ingest.mqtt:plugin"' in pyproject


def test_ingest_help_lists_the_registered_collectors() -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        cli.build_parser().parse_args(["ingest", "--help"])
    text = out.getvalue()
    for name in plugins.collectors():
        assert f"    {name} " in text, text
    for builtin in ("history", "tcp", "replay", "mtconnect", "perfmon", "archive"):
        assert builtin in text


def test_a_plugin_that_fails_to_load_is_left_out_and_named(monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    points = [EntryPoint("broken", "no.such.module:plugin", plugins.GROUP_COLLECTORS),
              EntryPoint("notaplugin", "machinewatch.names:TOPIC_READINGS", plugins.GROUP_COLLECTORS),
              EntryPoint("mqtt", "ingest.mqtt:plugin", plugins.GROUP_COLLECTORS)]
    monkeypatch.setattr(plugins, "entry_points", lambda group: [p for p in points if p.group == group])
    assert list(plugins.collectors()) == ["mqtt"]
    assert "broken" in caplog.text
    assert "notaplugin" in caplog.text


class _Example(CollectorSettings):
    host: str = "127.0.0.1"
    port: int = 1883
    tags: list[str] = Field(default_factory=list)


def test_settings_come_from_the_table_then_env_then_overrides(tmp_path: Path) -> None:
    conf = tmp_path / "x.conf"
    conf.write_text('[example]\nport = 2000\ntags = ["a"]\n\n[example.runner]\nflush_interval_s = 0.25\n')
    loaded = load_plugin_settings("example", _Example, conf, environ={})
    assert (loaded.port, loaded.tags, loaded.runner.flush_interval_s) == (2000, ["a"], 0.25)
    env = {"MW_EXAMPLE_PORT": "3000", "MW_EXAMPLE_TAGS": '["b", "c"]', "MW_EXAMPLE_HOST": "10.0.0.1"}
    loaded = load_plugin_settings("example", _Example, conf, environ=env)
    assert (loaded.port, loaded.tags, loaded.host) == (3000, ["b", "c"], "10.0.0.1")
    loaded = load_plugin_settings("example", _Example, conf, {"port": 4000, "host": None}, environ=env)
    assert (loaded.port, loaded.host) == (4000, "10.0.0.1")


def test_a_bad_key_is_named_with_its_value_and_file(tmp_path: Path) -> None:
    conf = tmp_path / "x.conf"
    conf.write_text('[example]\nport = "many"\ncolour = "red"\n')
    with pytest.raises(PluginConfigError) as err:
        load_plugin_settings("example", _Example, conf, environ={})
    text = str(err.value)
    assert str(conf) in text
    assert "example.port = 'many'" in text
    assert "example.colour" in text
    with pytest.raises(PluginConfigError, match="MW_EXAMPLE_TAGS must be JSON"):
        load_plugin_settings("example", _Example, conf, environ={"MW_EXAMPLE_TAGS": "a,b"})
    conf.write_text("[other]\n")
    with pytest.raises(PluginConfigError, match=r"no \[example\] table"):
        load_plugin_settings("example", _Example, conf, environ={})


def test_every_registered_sample_conf_loads_into_its_settings_model() -> None:
    for plugin in plugins.collectors().values():
        assert plugin.sample_conf is not None and plugin.sample_conf.is_file(), plugin.name
        settings = plugin.load_settings(plugin.sample_conf, environ={})
        assert isinstance(settings, plugin.settings_model)


# The core (ARCHITECTURE.md): these modules import no stage and not the composition root. The rest of
# machinewatch/ (cli, demo, jobs, stack, playback, query) is the composition root or still to move.
CORE = ("record", "names", "quality", "config", "kafka_io", "runtime", "plugins", "device_events", "archive")
ABOVE_CORE = ("ingest", "sinks", "simulators", "flink_jobs", "dashboards", "bench", "machinewatch.cli",
              "machinewatch.demo", "machinewatch.jobs", "machinewatch.stack")


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


@pytest.mark.parametrize("module", CORE)
def test_core_module_imports_nothing_above_the_core(module: str) -> None:
    imported = _imports(REPO / "machinewatch" / f"{module}.py")
    above = sorted(name for name in imported for top in ABOVE_CORE if name == top or name.startswith(top + "."))
    assert not above, f"machinewatch/{module}.py imports {above}"


def test_the_mqtt_plugin_is_written_only_against_the_core() -> None:
    allowed = {"machinewatch." + m for m in CORE} | {"ingest.mqtt"}
    for path in sorted((REPO / "ingest" / "mqtt").glob("*.py")):
        ours: Any = {n for n in _imports(path) if n.split(".")[0] in ("machinewatch", "ingest", "sinks",
                                                                      "simulators", "flink_jobs")}
        stray = sorted(n for n in ours if not any(n == a or n.startswith(a + ".") for a in allowed))
        assert not stray, f"{path.name} imports {stray}"


def test_collector_flags_override_the_toml_table_and_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    tcp = plugins.collectors()["tcp"]
    assert tcp.sample_conf is not None
    monkeypatch.setenv("MW_TCP_PORT", "7000")
    monkeypatch.setenv("MW_TCP_QUEUE_SIZE", "77")
    args = cli.build_parser().parse_args(["ingest", "tcp", "--config", str(tcp.sample_conf), "--port", "0",
                                          "--mapping", "dc-usa", "--mapping", "equipment"])
    assert args.plugin is tcp and tcp.flag_overrides is not None
    loaded: Any = tcp.load_settings(args.config, tcp.flag_overrides(args))
    assert loaded.port == 0                          # the flag, over the env's 7000 and the file's 9988
    assert loaded.mappings == ["dc-usa", "equipment"]
    assert loaded.queue_size == 77                   # no flag: the environment, over the file
    assert loaded.default_mapping == "equipment"     # neither: the file


# Collectors that still run their own loops and are wired into cli.py by hand (issue 16, next steps); a collector
# ported to the runner leaves this list, and the tests below then hold it to the registry.
NOT_YET_PLUGINS: set[str] = set()


def _ingest_choices() -> dict[str, Any]:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    ingest = sub.choices["ingest"]  # type: ignore[attr-defined]
    return next(a for a in ingest._actions if a.dest == "collector").choices  # type: ignore[no-any-return]


def test_every_collector_of_ingest_help_comes_from_the_registry() -> None:
    registered = plugins.collectors()
    choices = _ingest_choices()
    for name, sub in choices.items():
        if name in NOT_YET_PLUGINS:
            continue
        assert name in registered, f"'ingest {name}' is wired by hand, not registered"
        assert sub.get_default("plugin") is registered[name], name
    assert {"tcp", "replay", "archive", "mqtt"} <= set(registered)
    pyproject = (REPO / "pyproject.toml").read_text()
    for name in registered:
        assert f'{name} = "ingest.{name}:plugin"' in pyproject, name


def test_each_registered_plugin_folder_has_its_readme_sample_conf_and_testdata() -> None:
    for name, plugin in plugins.collectors().items():
        folder = REPO / "ingest" / name
        assert plugin.sample_conf == folder / "sample.conf", name
        assert (folder / "README.md").is_file(), name
        assert (folder / "testdata").is_dir() and any((folder / "testdata").iterdir()), name


def test_no_module_of_machinewatch_imports_a_ported_collector() -> None:
    """The registry is the only way from the core and the composition root to a collector."""
    stray: list[str] = []
    for path in sorted((REPO / "machinewatch").rglob("*.py")):
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] != "ingest" or len(parts) < 2 or parts[1] in NOT_YET_PLUGINS:
                continue
            if parts[1] == "formats" and path.name == "cli.py":
                continue  # 'simulate equipment|servers|datacenter' maps its lines with the collectors' mappings
            stray.append(f"{path.relative_to(REPO)} imports {name}")
    assert not stray, stray
