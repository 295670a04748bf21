"""Shared format layer: decoders (CSV, JSON lines, Parquet -> dict rows) and declarative mappings
(dict row -> canonical Readings). Transports (history loader, TCP listener, replay, simulators) only
move bytes and rows; every format rule lives here, once.
"""

from ingest.formats.decoders import Row, decode_json_line, iter_rows
from ingest.formats.mapping import Mapping, MetricSpec, load_mapping, mapping_names
from ingest.formats.rows import FeedMapper, MapResult, Reject, RepeatTracker, RowMapper, Seen
from ingest.formats.units import normalise

__all__ = [
    "FeedMapper", "MapResult", "Mapping", "MetricSpec", "Reject", "RepeatTracker", "Row", "RowMapper", "Seen",
    "decode_json_line", "iter_rows", "load_mapping", "mapping_names", "normalise",
]
