"""The plugin registry: collectors, sinks and simulators found through Python entry points, their settings, and
how one is run.

A collector registers one line in its distribution's ``pyproject.toml``::

    [project.entry-points."machinewatch.collectors"]
    mqtt = "ingest.mqtt:plugin"

naming a ``Collector``: its settings model (one pydantic model, the ``[<name>]`` table of a TOML file, every
top-level key overridable by ``MW_<NAME>_<KEY>``) and a factory of its ``runtime.Source``. The CLI builds
``machinewatch ingest <name>`` from it; ``run_collector`` gives the source the shared Kafka sink, the
dead-letter topic and the one runner. Nothing here imports a plugin's module before it is asked for.

Sinks (``machinewatch.sinks``: the Kafka consumers of ``sinks/``) and simulators (``machinewatch.simulators``)
register the same way, naming a ``SinkPlugin`` / ``SimulatorPlugin``: ``machinewatch sink <name>`` and
``machinewatch simulate <name>`` are built from them, each with only its own flags, and their settings are
the ``[sink_<name>]`` / ``[simulate_<name>]`` table (``MW_SINK_<NAME>_<KEY>``, ``MW_SIMULATE_<NAME>_<KEY>``)
read by the same loader as a collector's, the flags over both.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from importlib.metadata import entry_points
from pathlib import Path
from types import UnionType
from typing import Any, ClassVar, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from machinewatch import names
from machinewatch.config import Settings, read_toml_table, validation_problems
from machinewatch.runtime import Counters, RunOptions, Source

log = logging.getLogger(__name__)

GROUP_COLLECTORS = "machinewatch.collectors"
GROUP_SINKS = "machinewatch.sinks"
GROUP_SIMULATORS = "machinewatch.simulators"
# Shared code of one stage that another stage's plugin may use only through the registry (never an import):
# ``feeds`` is ingest.formats' FeedMapper, with which the source-format simulators publish their lines.
GROUP_SHARED = "machinewatch.shared"


class PluginConfigError(ValueError):
    """A plugin's configuration is invalid; the message names the file, the key, the value and why."""


class PluginSettings(BaseModel):
    """A plugin's settings: one table of a TOML file; a key the model does not know is an error."""

    model_config = ConfigDict(extra="forbid")


class CollectorSettings(PluginSettings):
    """What every collector's settings have: the topic its readings go to and the runner's options."""

    topic: str = Field(names.TOPIC_READINGS, description="Kafka topic the readings go to")
    runner: RunOptions = Field(default_factory=RunOptions, description="batching, retries, stats ([<name>.runner])")


@dataclass(frozen=True)
class Collector:
    """A collector plugin: what the registry, the CLI and ``run_collector`` need to know of it.

    ``make_source(config, settings)`` is called only when the collector runs, so a plugin module imports its
    client library there, not at registration (``ingest --help`` stays cheap and works without it).

    Optional, for a collector that has command-line flags: ``add_arguments(parser)`` adds them to
    ``machinewatch ingest <name>`` and ``flag_overrides(args)`` maps the parsed flags to settings keys (a None
    value is not given: the TOML table or the environment decides). ``summary_line(source, counters)`` is
    printed when the run ends (what a batch collector did); ``exit_code(source, counters)`` is the command's
    status (default 0). ``settings_loader(path, overrides, environ)`` replaces the shared loader for a plugin
    whose settings need more than it does (paths relative to the file, a file that is re-read later); it
    must still apply the table, then ``MW_<NAME>_<KEY>``, then the overrides.
    """

    name: str
    summary: str                       # one line for ``machinewatch ingest --help``
    description: str                   # the paragraph of ``machinewatch ingest <name> --help``
    settings_model: type[CollectorSettings]
    make_source: Callable[[Any, Settings], Source]
    sample_conf: Path | None = None    # the plugin's sample.conf (tests load every one)
    client_id: str = ""                # the Kafka client id of its publisher (default machinewatch-<name>)
    add_arguments: Callable[[argparse._ActionsContainer], None] | None = None
    flag_overrides: Callable[[argparse.Namespace], dict[str, Any]] | None = None
    summary_line: Callable[[Any, Counters], str | None] | None = None
    exit_code: Callable[[Any, Counters], int] | None = None
    settings_loader: Callable[[Path | None, Mapping[str, Any], Mapping[str, str] | None], CollectorSettings] | None \
        = None

    def load_settings(self, path: Path | None, overrides: Mapping[str, Any] | None = None,
                      environ: Mapping[str, str] | None = None) -> CollectorSettings:
        """``[<name>]`` of the TOML file at ``path`` (none: defaults only), then ``MW_<NAME>_<KEY>`` variables, then
        ``overrides`` (command-line flags); checked once, with every bad key named."""
        if self.settings_loader is not None:
            return self.settings_loader(path, overrides or {}, environ)
        return load_plugin_settings(self.name, self.settings_model, path, overrides, environ)


_P = TypeVar("_P", bound=BaseModel)


def load_plugin_settings(table: str, model: type[_P], path: Path | None,
                         overrides: Mapping[str, Any] | None = None,
                         environ: Mapping[str, str] | None = None) -> _P:
    """The one settings loader of every plugin (see ``Collector.load_settings``)."""
    data: dict[str, Any] = {}
    origin = "defaults"
    if path is not None:
        data = dict(read_toml_table(Path(path), table, table, PluginConfigError))
        origin = str(path)
    data.update(env_overrides(table, model, os.environ if environ is None else environ))
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        msg = f"invalid {table} config ({origin}): {validation_problems(exc, table)}"
        raise PluginConfigError(msg) from exc


def env_overrides(table: str, model: type[BaseModel], environ: Mapping[str, str]) -> dict[str, Any]:
    """``MW_<TABLE>_<FIELD>`` for each top-level field; lists, tables and sub-models are given as JSON."""
    found: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        key = f"MW_{table}_{name}".upper()
        if key not in environ:
            continue
        text = environ[key]
        if _structured(info.annotation):
            try:
                found[name] = json.loads(text)
            except json.JSONDecodeError as exc:
                msg = f"{key} must be JSON for the {table}.{name} setting: {exc}"
                raise PluginConfigError(msg) from exc
        else:
            found[name] = text
    return found


def _structured(annotation: Any) -> bool:
    """A list, table or model (possibly optional): given as JSON in an environment variable."""
    if get_origin(annotation) in (list, dict, tuple, set):
        return True
    if get_origin(annotation) in (Union, UnionType):
        return any(_structured(arg) for arg in get_args(annotation) if arg is not type(None))
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


_T = TypeVar("_T")


def _registered(group: str, kind: type[_T], what: str) -> dict[str, _T]:
    """Every plugin of ``kind`` registered under ``group``, by name; one that fails to load is logged and left out
    (the others still work)."""
    found: dict[str, _T] = {}
    for point in entry_points(group=group):
        try:
            plugin = point.load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not take the CLI down
            log.warning("%s plugin %s (%s) could not be loaded: %s", what, point.name, point.value, exc)
            continue
        if not isinstance(plugin, kind):
            log.warning("%s plugin %s (%s) is a %s, not a machinewatch.plugins.%s", what, point.name,
                        point.value, type(plugin).__name__, kind.__name__)
            continue
        found.setdefault(plugin.name, plugin)  # type: ignore[attr-defined]
    return dict(sorted(found.items()))



def collectors() -> dict[str, Collector]:
    """Every collector registered under ``machinewatch.collectors``, by name."""
    return _registered(GROUP_COLLECTORS, Collector, "collector")


def sinks() -> dict[str, SinkPlugin]:
    """Every sink registered under ``machinewatch.sinks``, by name."""
    return _registered(GROUP_SINKS, SinkPlugin, "sink")


def simulators() -> dict[str, SimulatorPlugin]:
    """Every simulator registered under ``machinewatch.simulators``, by name."""
    return _registered(GROUP_SIMULATORS, SimulatorPlugin, "simulator")


def shared(name: str) -> Any:
    """The object registered as ``name`` under ``machinewatch.shared`` (see GROUP_SHARED)."""
    for point in entry_points(group=GROUP_SHARED):
        if point.name == name:
            return point.load()
    msg = f"nothing registered as {name!r} under {GROUP_SHARED} (is machinewatch installed? pip install -e .)"
    raise RuntimeError(msg)


def run_collector(plugin: Collector, config: CollectorSettings, settings: Settings,
                  duration_s: float | None = None, source: Source | None = None) -> Counters:
    """Run one collector on the shared runner: its source, the Kafka publisher as sink and dead-letter output.

    ``source``: one made already (``plugin.make_source(config, settings)``), e.g. to read its counters after."""
    from machinewatch.kafka_io import KafkaDeadLetters, Publisher, PublisherSink
    from machinewatch.runtime import Runner

    source = source if source is not None else plugin.make_source(config, settings)
    publisher = Publisher(settings, topic=config.topic, client_id=plugin.client_id or f"machinewatch-{plugin.name}")
    # A collector that emits device events names their topic in its settings (mtconnect); the others have none.
    events_topic = getattr(config, "device_events_topic", names.TOPIC_DEVICE_EVENTS)
    sink = PublisherSink(publisher, device_events_topic=events_topic)  # closes the publisher
    runner = Runner(plugin.name, source, sink, KafkaDeadLetters(publisher), config.runner)
    return runner.run(duration_s)


@dataclass(frozen=True)
class CommandPlugin:
    """A sink or simulator plugin: one subcommand of ``machinewatch sink`` / ``machinewatch simulate``.

    ``run(config, settings)`` does the work with the plugin's loaded settings and the shared ``Settings`` and
    returns the exit status; it imports what it needs itself, so the registry stays cheap. ``add_arguments``
    adds the subcommand's own flags; each flag's ``dest`` is a settings key (a flag left out is None: the TOML
    table or the environment decides), unless ``flag_overrides(args)`` maps them. ``aliases``: other command
    lines that run the same plugin (``machinewatch notify`` is ``machinewatch sink notify``).
    """

    kind: ClassVar[str] = ""           # "sink" or "simulate": the CLI verb, and the settings table prefix

    name: str
    summary: str                       # one line for ``machinewatch <verb> --help``
    description: str                   # the paragraph of ``machinewatch <verb> <name> --help``
    settings_model: type[PluginSettings]
    run: Callable[[Any, Settings], int]
    add_arguments: Callable[[argparse._ActionsContainer], None] | None = None
    flag_overrides: Callable[[argparse.Namespace], dict[str, Any]] | None = None
    sample_conf: Path | None = None
    aliases: tuple[str, ...] = field(default=())

    @property
    def table(self) -> str:
        """The TOML table (and, upper-cased, the ``MW_<TABLE>_<KEY>`` prefix) of its settings."""
        return f"{self.kind}_{self.name}".replace("-", "_")

    def load_settings(self, path: Path | None, overrides: Mapping[str, Any] | None = None,
                      environ: Mapping[str, str] | None = None) -> PluginSettings:
        """``[<kind>_<name>]`` of ``path``, then ``MW_<KIND>_<NAME>_<KEY>``, then ``overrides`` (the flags)."""
        return load_plugin_settings(self.table, self.settings_model, path, overrides, environ)

    def overrides(self, args: argparse.Namespace) -> dict[str, Any]:
        """The settings keys the parsed command line gives."""
        if self.flag_overrides is not None:
            return self.flag_overrides(args)
        return {key: getattr(args, key) for key in self.settings_model.model_fields if hasattr(args, key)}


@dataclass(frozen=True)
class SinkPlugin(CommandPlugin):
    """A Kafka consumer of ``sinks/`` (``machinewatch sink <name>``)."""

    kind: ClassVar[str] = "sink"


@dataclass(frozen=True)
class SimulatorPlugin(CommandPlugin):
    """A simulator of ``simulators/`` (``machinewatch simulate <name>``)."""

    kind: ClassVar[str] = "simulate"


def duration_arg(text: str) -> timedelta:
    """A command-line duration: 30s, 15m, 2h or 1d."""
    match = re.fullmatch(r"(\d+)([smhd])", text.strip())
    if not match:
        msg = f"'{text}' is not a duration like 30s, 15m, 2h or 1d"
        raise argparse.ArgumentTypeError(msg)
    return timedelta(seconds=int(match[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]])


# ---------------------------------------------------------------------- the CLI's part

def add_collector_parsers(sub: argparse._SubParsersAction) -> None:
    """``machinewatch ingest <name>`` for every registered collector not already there."""
    for plugin in collectors().values():
        if plugin.name in sub.choices:
            log.warning("collector plugin %s is shadowed by a built-in 'ingest %s'", plugin.name, plugin.name)
            continue
        p = sub.add_parser(plugin.name, help=f"{plugin.summary} [plugin]", description=plugin.description)
        sample = f" (see {plugin.sample_conf})" if plugin.sample_conf else ""
        p.add_argument("--config", type=Path,
                       help=f"TOML file with a [{plugin.name}] table{sample}; MW_{plugin.name.upper()}_<KEY> "
                       "variables override its keys")
        p.add_argument("--duration", type=float, help="stop after this many seconds (default: until SIGTERM/Ctrl-C, "
                       "or until a batch collector's input is exhausted)")
        if plugin.add_arguments is not None:
            group = p.add_argument_group(f"{plugin.name} settings",
                                         "flags override the TOML table and the MW_* variables")
            plugin.add_arguments(group)
        p.set_defaults(func=run_command, plugin=plugin)


def run_command(args: argparse.Namespace, settings: Settings) -> int:
    """``machinewatch ingest <name> ...`` for a parsed command line: settings, source, the run, its summary."""
    plugin: Collector = args.plugin
    flags = plugin.flag_overrides(args) if plugin.flag_overrides is not None else {}
    try:
        config = plugin.load_settings(args.config, flags)
        source = plugin.make_source(config, settings)
    except ValueError as exc:  # PluginConfigError, or a setting the source itself refused (a mapping)
        msg = f"ingest {plugin.name}: {exc}"
        raise RuntimeError(msg) from exc
    counters = run_collector(plugin, config, settings, args.duration, source=source)
    # One line on stdout: the plugin's own summary of the run, or the runner's counters.
    line = plugin.summary_line(source, counters) if plugin.summary_line is not None else None
    print(line or json.dumps({"collector": plugin.name, "received": counters.received, "written": counters.written,
                              "rejected": counters.rejected}))
    return plugin.exit_code(source, counters) if plugin.exit_code is not None else 0


def add_command_parsers(sub: argparse._SubParsersAction, plugins: Mapping[str, CommandPlugin]) -> None:
    """``machinewatch sink|simulate <name>`` for each registered plugin, with only its own flags."""
    for plugin in plugins.values():
        p = sub.add_parser(plugin.name, help=plugin.summary, description=plugin.description)
        add_command_arguments(p, plugin)


def add_command_arguments(p: argparse.ArgumentParser, plugin: CommandPlugin) -> None:
    """A plugin's flags and ``--config`` on its parser (also used for an alias verb such as ``notify``)."""
    sample = f" (see {plugin.sample_conf})" if plugin.sample_conf else ""
    p.add_argument("--config", type=Path,
                   help=f"TOML file with a [{plugin.table}] table{sample}; MW_{plugin.table.upper()}_<KEY> variables "
                   "override its keys, flags override both")
    if plugin.add_arguments is not None:
        plugin.add_arguments(p)
    p.set_defaults(func=run_plugin_command, plugin=plugin)


def run_plugin_command(args: argparse.Namespace, settings: Settings) -> int:
    """``machinewatch sink|simulate <name> ...`` for a parsed command line: its settings, then its run."""
    plugin: CommandPlugin = args.plugin
    try:
        config = plugin.load_settings(getattr(args, "config", None), plugin.overrides(args))
    except PluginConfigError as exc:
        msg = f"{plugin.kind} {plugin.name}: {exc}"
        raise RuntimeError(msg) from exc
    return plugin.run(config, settings)


def flag_summary(plugins: Mapping[str, CommandPlugin]) -> str:
    """Each plugin with its flags, for the epilog of ``machinewatch sink|simulate --help``."""
    if not plugins:  # the entry points come from the installed distribution, not from the source tree
        return "  none registered: is machinewatch installed with its entry points? (pip install -e . / ./run)"
    lines = []
    for plugin in plugins.values():
        probe = argparse.ArgumentParser(add_help=False)
        if plugin.add_arguments is not None:
            plugin.add_arguments(probe)
        flags = [a.option_strings[-1] for a in probe._actions if a.option_strings]
        lines.append(f"  {plugin.name}: {' '.join(flags) or '(no flags)'}")
    return "\n".join(lines)
