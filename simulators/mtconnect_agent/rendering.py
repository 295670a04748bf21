"""The agent's documents as MTConnect renders them: MTConnectDevices (/probe), MTConnectStreams (/current,
/sample), MTConnectError, and the multipart framing of a streaming /sample. Pure functions of their input."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from xml.sax.saxutils import escape, quoteattr

from simulators.mtconnect_agent.model import DeviceState, ItemSpec, Obs

SCHEMA_NAMESPACES = {
    "streams": "urn:mtconnect.org:MTConnectStreams:{v}",
    "devices": "urn:mtconnect.org:MTConnectDevices:{v}",
    "error": "urn:mtconnect.org:MTConnectError:{v}",
}
STREAM_BOUNDARY = "mw-mtconnect-sim-boundary"
CONDITION_ELEMENTS = {"NORMAL": "Normal", "WARNING": "Warning", "FAULT": "Fault", "UNAVAILABLE": "Unavailable"}


@dataclass(frozen=True, slots=True)
class Documents:
    """Renders the documents of one agent instance (its header values and its dialect)."""

    instance_id: int
    schema_version: str
    buffer_size: int
    # Real agents in the wild: timestamps without 'Z' and a sloppy encoding declaration.
    sloppy: bool = False

    def _ns(self, kind: str) -> str:
        return SCHEMA_NAMESPACES[kind].format(v=self.schema_version)

    def timestamp(self, ms: int) -> str:
        text = datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
        return text if self.sloppy else text + "Z"

    def _decl(self) -> str:
        return f'<?xml version="1.0" encoding="{"UTF8" if self.sloppy else "UTF-8"}"?>\n'

    def _header(self, extra: str = "") -> str:
        now = datetime.now(tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return (f'<Header creationTime="{now}" sender="mw-sim" instanceId="{self.instance_id}" '
                f'version="{self.schema_version}.0.0" bufferSize="{self.buffer_size}"{extra}/>')

    def probe(self, devices: Iterable[DeviceState]) -> bytes:
        parts = [self._decl(), f'<MTConnectDevices xmlns="{self._ns("devices")}">',
                 self._header(' assetBufferSize="0" assetCount="0"'), "<Devices>"]
        for dev in devices:
            parts.append(f'<Device id="{dev.name}" name="{dev.name}" uuid="{dev.uuid}">'
                         f'<Description manufacturer="machinewatch" model="sim">simulated CNC</Description>')
            by_component: dict[tuple[str, str], list[ItemSpec]] = {}
            for spec in dev.items.values():
                by_component.setdefault((spec.component_type, spec.component), []).append(spec)
            top = by_component.pop(("Device", dev.name), [])
            parts.append("<DataItems>" + "".join(item_xml(s) for s in top) + "</DataItems><Components>")
            for (ctype, cname), specs in by_component.items():
                parts.append(f'<{ctype} id="{dev.name}-{cname}" name="{cname}"><DataItems>'
                             + "".join(item_xml(s) for s in specs) + f"</DataItems></{ctype}>")
            parts.append("</Components></Device>")
        parts.append("</Devices></MTConnectDevices>")
        return "".join(parts).encode()

    def streams(self, devices: Iterable[DeviceState], observations: list[Obs], next_seq: int, first: int,
                last: int) -> bytes:
        """MTConnectStreams of ``observations``, grouped by device and component in the order of ``devices``."""
        extra = f' nextSequence="{next_seq}" firstSequence="{first}" lastSequence="{last}"'
        parts = [self._decl(), f'<MTConnectStreams xmlns="{self._ns("streams")}">', self._header(extra), "<Streams>"]
        by_device: dict[str, list[Obs]] = {}
        for obs in observations:
            by_device.setdefault(obs.device, []).append(obs)
        for dev in devices:
            obs_list = by_device.get(dev.name, [])
            if not obs_list:
                continue
            parts.append(f'<DeviceStream name="{dev.name}" uuid="{dev.uuid}">')
            by_comp: dict[tuple[str, str], list[Obs]] = {}
            for obs in obs_list:
                by_comp.setdefault((obs.item.component_type, obs.item.component), []).append(obs)
            for (ctype, cname), comp_obs in by_comp.items():
                parts.append(f'<ComponentStream component="{ctype}" name="{cname}" componentId="{dev.name}-{cname}">')
                for group, category in (("Samples", "SAMPLE"), ("Events", "EVENT"), ("Condition", "CONDITION")):
                    chosen = [o for o in comp_obs if o.item.category == category]
                    if chosen:
                        parts.append(f"<{group}>" + "".join(self.obs_xml(o) for o in chosen) + f"</{group}>")
                parts.append("</ComponentStream>")
            parts.append("</DeviceStream>")
        parts.append("</Streams></MTConnectStreams>")
        return "".join(parts).encode()

    def obs_xml(self, obs: Obs) -> str:
        spec = obs.item
        attrs = (f'dataItemId="{spec.id}" name="{spec.name}" sequence="{obs.sequence}" '
                 f'timestamp="{self.timestamp(obs.ts)}"')
        if spec.sub_type:
            attrs += f' subType="{spec.sub_type}"'
        if spec.category == "CONDITION":
            element = CONDITION_ELEMENTS[obs.level]
            return f'<{element} {attrs} type="{spec.type}">{escape(obs.value)}</{element}>'
        return f"<{spec.element} {attrs}>{escape(obs.value)}</{spec.element}>"

    def error(self, code: str, text: str) -> bytes:
        return (f'{self._decl()}<MTConnectError xmlns="{self._ns("error")}">{self._header()}'
                f"<Errors><Error errorCode={quoteattr(code)}>{escape(text)}</Error></Errors></MTConnectError>"
                ).encode()


def item_xml(spec: ItemSpec) -> str:
    attrs = f'category="{spec.category}" id="{spec.id}" name="{spec.name}" type="{spec.type}"'
    if spec.sub_type:
        attrs += f' subType="{spec.sub_type}"'
    if spec.units:
        attrs += f' units="{spec.units}" nativeUnits="{spec.units}"'
    return f"<DataItem {attrs}/>"


def multipart_part(body: bytes) -> bytes:
    """One part of a streaming /sample (multipart/x-mixed-replace with STREAM_BOUNDARY)."""
    return (f"--{STREAM_BOUNDARY}\r\nContent-type: text/xml\r\nContent-length: {len(body)}\r\n\r\n"
            ).encode() + body + b"\r\n"
