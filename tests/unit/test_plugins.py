"""The plugin registry: entry points found, the CLI built from them, one settings loader for every plugin, and a
core that imports nothing above it."""

from __future__ import annotations

import ast
import contextlib
import io
import re
import sys
import tomllib
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
            stray.append(f"{path.relative_to(REPO)} imports {name}")
    assert not stray, stray


# ---------------------------------------------------------------------- sinks and simulators

SINKS = {"influxdb", "archive", "notify"}
SIMULATORS = {"temperature", "equipment", "servers", "datacenter", "perfmon", "mtconnect"}
COMMAND_GROUPS: dict[str, tuple[str, Any, set[str]]] = {"sink": (plugins.GROUP_SINKS, plugins.sinks, SINKS),
                  "simulate": (plugins.GROUP_SIMULATORS, plugins.simulators, SIMULATORS)}


def _verb_choices(parser: Any, verb: str) -> dict[str, Any]:
    sub = next(a for a in parser._actions if a.dest == "command")
    verb_parser = sub.choices[verb]
    return next(a for a in verb_parser._actions if a.dest in ("target", "kind")).choices


@pytest.mark.parametrize("verb", sorted(COMMAND_GROUPS))
def test_everything_sink_and_simulate_offer_comes_from_the_registry(verb: str) -> None:
    group, registry, expected = COMMAND_GROUPS[verb]
    registered = registry()
    assert expected <= set(registered), f"{verb}: {sorted(expected - set(registered))} not registered"
    choices = _verb_choices(cli.build_parser(), verb)
    assert set(choices) == set(registered), f"'{verb}' offers {sorted(choices)}, the registry {sorted(registered)}"
    for name, sub in choices.items():
        assert sub.get_default("plugin") is registered[name], name
    pyproject = (REPO / "pyproject.toml").read_text()
    section = pyproject.split(f'[project.entry-points."{group}"]', 1)[1].split("\n[", 1)[0]
    for name in registered:
        assert re.search(rf'^{name} = "(sinks|simulators)\.[a-z_.]+:plugin"$', section, re.M), name


def test_notify_is_an_alias_of_the_notify_sink() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["notify", "--alerts-topic", "t", "--group-id", "g"])
    assert args.plugin is plugins.sinks()["notify"]
    assert args.plugin.load_settings(None, args.plugin.overrides(args), environ={}).model_dump() == \
        {"alerts_topic": "t", "group_id": "g", "ledger": None, "idle_exit": None}


@pytest.mark.parametrize(("verb", "help_lists"), [
    ("simulate", ["temperature", "--overheat-every", "mtconnect", "--scenario", "perfmon", "--out-dir", "datacenter",
                  "--humidity-from-step"]),
    ("sink", ["influxdb", "--history", "archive", "--max-age", "notify", "--ledger"]),
])
def test_verb_help_lists_each_plugin_with_its_flags(verb: str, help_lists: list[str]) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        cli.build_parser().parse_args([verb, "--help"])
    text = out.getvalue()
    for name, plugin in COMMAND_GROUPS[verb][1]().items():
        assert re.search(rf"^    {name}\b", text, re.M), text   # the subcommand list
        assert f"  {name}: " in text, text                      # the epilog: the plugin and its flags
        assert " ".join(plugin.summary.split()[:4]) in " ".join(text.split())
    for word in help_lists:
        assert word in text


@pytest.mark.parametrize("argv", [
    ["simulate", "mtconnect", "--overheat-every", "5"],        # a temperature flag
    ["simulate", "temperature", "--out-dir", "/tmp/x"],        # a perfmon flag
    ["simulate", "equipment", "--scenario", "estop@5"],        # an mtconnect flag
    ["simulate", "servers", "--humidity-from-step", "3"],      # a datacenter flag
    ["sink", "influxdb", "--max-age", "5"],                    # an archive flag
    ["sink", "archive", "--history"],                          # an influxdb flag
])
def test_each_subcommand_takes_only_its_own_flags(argv: list[str]) -> None:
    with contextlib.redirect_stderr(io.StringIO()) as err, pytest.raises(SystemExit) as exc:
        cli.build_parser().parse_args(argv)
    assert exc.value.code == 2
    assert "unrecognized arguments" in err.getvalue()


def test_sink_and_simulator_settings_come_from_the_one_loader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The [<verb>_<name>] table, then MW_<VERB>_<NAME>_<KEY>, then the flags, as for a collector."""
    conf = tmp_path / "mw.toml"
    conf.write_text("[simulate_temperature]\ndevices = 4\nsite = 'hall-2'\nregion = 'north'\n\n"
                    "[sink_archive]\nmax_age = 5.0\nroot = '/data/archive'\n")
    monkeypatch.setenv("MW_SIMULATE_TEMPERATURE_SITE", "hall-3")
    monkeypatch.setenv("MW_SIMULATE_TEMPERATURE_REGION", "south")
    monkeypatch.setenv("MW_SINK_ARCHIVE_MAX_AGE", "7.5")
    parser = cli.build_parser()
    args = parser.parse_args(["simulate", "temperature", "--config", str(conf), "--region", "east"])
    loaded: Any = args.plugin.load_settings(args.config, args.plugin.overrides(args))
    assert (loaded.devices, loaded.site, loaded.region, loaded.seed) == (4, "hall-3", "east", 1)
    args = parser.parse_args(["sink", "archive", "--config", str(conf)])
    loaded = args.plugin.load_settings(args.config, args.plugin.overrides(args))
    assert (loaded.max_age, loaded.root) == (7.5, Path("/data/archive"))
    conf.write_text("[sink_archive]\nmax_agee = 5.0\n")
    with pytest.raises(PluginConfigError, match=r"sink_archive\.max_agee"):
        args.plugin.load_settings(conf, {})


def test_a_bad_plugin_setting_is_an_error_naming_it_not_a_traceback(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "mw.toml"
    conf.write_text("[simulate_servers]\ndevices = 0\n")
    assert cli.main(["simulate", "servers", "--config", str(conf), "--count", "1", "--output", "/dev/null"]) == 1
    assert "simulate_servers.devices = 0" in capsys.readouterr().err


_NEW_PLUGIN = '''
"""A plugin written only against the core: its settings, flags and run."""
from pydantic import Field
from machinewatch.plugins import PluginSettings, SimulatorPlugin

class BlinkSettings(PluginSettings):
    lamps: int = Field(1, ge=1)
    colour: str = "red"

RUNS = []

def _add(p):
    p.add_argument("--lamps", type=int, help="how many lamps blink")

def _run(config, settings):
    RUNS.append(config)
    return 0

plugin = SimulatorPlugin(name="blink", summary="blinking lamps", description="Lamps that blink.",
                         settings_model=BlinkSettings, run=_run, add_arguments=_add)
'''


def test_a_new_plugin_needs_only_its_module_and_one_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "mw_blink_plugin.py").write_text(_NEW_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    real = plugins.entry_points
    extra = EntryPoint("blink", "mw_blink_plugin:plugin", plugins.GROUP_SIMULATORS)
    monkeypatch.setattr(plugins, "entry_points",
                        lambda group: [*real(group=group), *([extra] if group == extra.group else [])])
    assert "blink" in plugins.simulators()
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["simulate", "--help"])
    assert "blinking lamps" in capsys.readouterr().out
    monkeypatch.setenv("MW_SIMULATE_BLINK_COLOUR", "green")
    assert cli.main(["simulate", "blink", "--lamps", "3"]) == 0
    import mw_blink_plugin

    assert [(c.lamps, c.colour) for c in mw_blink_plugin.RUNS] == [(3, "green")]


def test_the_feed_simulators_reach_the_ingest_mappings_only_through_the_registry() -> None:
    from ingest.formats import FeedMapper

    assert plugins.shared("feeds") is FeedMapper
    with pytest.raises(RuntimeError, match="nothing registered as 'nope'"):
        plugins.shared("nope")


def _plugin_files(registry: dict[str, Any]) -> list[Path]:
    files = set()
    for plugin in registry.values():
        module = sys.modules[plugin.run.__module__]
        assert module.__file__ is not None
        files.add(Path(module.__file__))
    return sorted(files)


@pytest.mark.parametrize("verb", sorted(COMMAND_GROUPS))
def test_sink_and_simulator_plugins_import_only_the_core_and_their_own_stage(verb: str) -> None:
    _, registry, _ = COMMAND_GROUPS[verb]
    allowed = {"machinewatch." + m for m in CORE} | {"machinewatch"}  # bare: ``from machinewatch import names``
    for path in _plugin_files(registry()):
        stage = path.relative_to(REPO).parts[0]
        ours = {n for n in _imports(path) if n.split(".")[0] in ("machinewatch", "ingest", "sinks", "simulators",
                                                                 "flink_jobs", "dashboards", "bench")}
        stray = sorted(n for n in ours if not (n in allowed or any(n == a or n.startswith(a + ".")
                                                                   for a in (*allowed - {"machinewatch"}, stage))))
        assert not stray, f"{path.relative_to(REPO)} imports {stray}"


def test_no_module_of_machinewatch_imports_a_sink_or_a_simulator() -> None:
    """The registry is the only way from the core and the CLI to a sink or a simulator."""
    stray = [f"{path.relative_to(REPO)} imports {name}" for path in sorted((REPO / "machinewatch").rglob("*.py"))
             for name in _imports(path) if name.split(".")[0] in ("sinks", "simulators")]
    assert not stray, stray


@pytest.mark.parametrize("verb", sorted(COMMAND_GROUPS))
def test_every_flag_of_a_sink_or_simulator_sets_one_of_its_settings(verb: str) -> None:
    """A flag whose dest is no settings key would be parsed and then silently ignored."""
    for name, plugin in COMMAND_GROUPS[verb][1]().items():
        sub = _verb_choices(cli.build_parser(), verb)[name]
        dests = {a.dest for a in sub._actions if a.option_strings and a.dest not in ("help", "config")}
        assert dests, name
        stray = dests - set(plugin.settings_model.model_fields)
        assert not stray, f"{verb} {name}: flags {sorted(stray)} set no setting"


@pytest.mark.parametrize("verb", sorted(COMMAND_GROUPS))
def test_every_sink_and_simulator_sample_conf_loads_and_names_every_key(verb: str) -> None:
    for name, plugin in COMMAND_GROUPS[verb][1]().items():
        assert plugin.sample_conf is not None and plugin.sample_conf.is_file(), name
        loaded = plugin.load_settings(plugin.sample_conf, environ={})
        assert loaded == plugin.settings_model(), f"{name}: the sample's values are not the defaults"
        table = plugin.sample_conf.read_text().split(f"[{plugin.table}]", 1)[1].split("\n[", 1)[0]
        for key in plugin.settings_model.model_fields:
            assert re.search(rf"^(# )?{key} = ", table, re.M), f"{plugin.sample_conf}: [{plugin.table}] lacks {key}"
        for commented in re.findall(r"^# (\w+) = (.+?)(?:  #|$)", table, re.M):  # the examples are valid values
            plugin.load_settings(None, {commented[0]: tomllib.loads(f"v = {commented[1]}")["v"]}, environ={})


def test_a_stale_install_without_the_entry_points_says_so_in_help(monkeypatch: pytest.MonkeyPatch) -> None:
    real = plugins.entry_points
    monkeypatch.setattr(plugins, "entry_points",
                        lambda group: [] if group == plugins.GROUP_SIMULATORS else real(group=group))
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        cli.build_parser().parse_args(["simulate", "--help"])
    assert "none registered: is machinewatch installed with its entry points?" in out.getvalue()
