"""Windows time-zone names (as PDH-CSV headers carry them, in any language) -> IANA zones.

Name -> Windows id from the Windows ids themselves, their English daylight names and the small table
``zones.toml``; Windows id -> IANA from CLDR's windowsZones as the ``tzlocal`` package ships it. A
name cut short (``RTZ 2 (``) resolves only when every known name it begins belongs to one zone.
"""

from __future__ import annotations

import functools
import hashlib
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from tzlocal.windows_tz import win_tz

TABLE = Path(__file__).with_name("zones.toml")
MIN_PREFIX = 3  # a cut name shorter than this says too little to pick a zone


@dataclass(frozen=True, slots=True)
class ZoneMatch:
    """How a header's zone name was resolved: ``how`` is ``exact`` or ``prefix`` (the name was cut)."""

    windows_id: str
    iana: str
    how: str
    matched: str  # the known name it matched (for a prefix: one of them)


class ZoneNameError(LookupError):
    """The name resolves to no zone, or (cut short) to several: ``candidates`` are their IANA names."""

    def __init__(self, message: str, candidates: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.candidates = candidates


def _norm(name: str) -> str:
    return re.sub(r"\s+", " ", name).strip().casefold()


@functools.cache
def known_names() -> dict[str, tuple[str, str]]:
    """Normalised name -> (Windows id, the name as written), for every name we can resolve."""
    names: dict[str, tuple[str, str]] = {}
    for wid in win_tz:
        names[_norm(wid)] = (wid, wid)
        if "Standard" in wid:
            daylight = wid.replace("Standard", "Daylight")
            names.setdefault(_norm(daylight), (wid, daylight))
    with TABLE.open("rb") as fh:
        doc = tomllib.load(fh)
    for wid, aliases in doc.get("names", {}).items():
        if wid not in win_tz:
            msg = f"{TABLE.name}: {wid!r} is not a Windows zone id in CLDR's windowsZones"
            raise ValueError(msg)
        for alias in aliases:
            names[_norm(alias)] = (wid, alias)
    return names


@functools.cache
def table_fingerprint() -> str:
    """Changes when the names we can resolve change (a newer table or tzlocal): parked files are retried."""
    digest = hashlib.blake2b(digest_size=8)
    for key, (wid, _) in sorted(known_names().items()):
        digest.update(f"{key}\x1f{wid}\x1f{win_tz[wid]}\x1e".encode())
    return digest.hexdigest()


def resolve_zone_name(name: str, *, cut: bool = False) -> ZoneMatch:
    """The IANA zone of a Windows zone name; ZoneNameError (with candidates, if any) when there is none.

    ``cut``: the name may end early (the header cell was truncated), so an unambiguous prefix counts.
    """
    key = _norm(name)
    names = known_names()
    if key in names:
        wid, written = names[key]
        return ZoneMatch(wid, win_tz[wid], "exact", written)
    zones = {wid: written for k, (wid, written) in sorted(names.items()) if key and k.startswith(key)}
    candidates = tuple(sorted({win_tz[w] for w in zones}))
    if not cut:
        msg = f"zone name {name!r} is not a known Windows time-zone name"
        if len(zones) == 1:
            msg += f" (it begins {next(iter(zones.values()))!r} only; was it cut short?)"
        raise ZoneNameError(msg, candidates)
    if len(zones) == 1 and len(key) >= MIN_PREFIX:
        ((wid, written),) = zones.items()
        return ZoneMatch(wid, win_tz[wid], "prefix", written)
    if not zones:
        msg = f"zone name {name!r} (cut short) begins no known Windows time-zone name"
    elif len(key) < MIN_PREFIX:
        msg = f"zone name {name!r} (cut short) is too short to tell the zone"
    else:
        msg = (f"zone name {name!r} (cut short) begins names of {len(zones)} zones "
               f"({', '.join(sorted(zones.values())[:6])}{' ...' if len(zones) > 6 else ''})")
    raise ZoneNameError(msg, candidates)
