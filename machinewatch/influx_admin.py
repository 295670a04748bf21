"""What a stage may ask InfluxDB about its buckets before writing: their retention.

A point older than its bucket's retention is dropped by InfluxDB ("partial write: points beyond
retention policy dropped=N") without saying which; knowing the retention lets a loader refuse a load
up front and the writer dead-letter exactly the points that cannot land.
"""

from __future__ import annotations

import logging

import requests

from machinewatch.config import Settings

log = logging.getLogger(__name__)


def bucket_retention_s(settings: Settings, bucket: str, token: str | None = None) -> int | None:
    """The bucket's retention in seconds (0 = forever), or None when it cannot be read (logged).

    Uses the dashboards' read token unless ``token`` is given: reading a bucket's definition needs
    read permission on it, which the write-only pipeline token lacks.
    """
    try:
        token = token or settings.read_token()
        resp = requests.get(
            f"{settings.influx}/api/v2/buckets", params={"name": bucket, "org": settings.influx_org},
            headers={"Authorization": f"Token {token}"}, timeout=settings.query_timeout_s,
        )
    except (RuntimeError, requests.RequestException) as exc:
        log.warning("cannot read the retention of InfluxDB bucket '%s': %s", bucket, exc)
        return None
    if resp.status_code != 200:
        log.warning("cannot read the retention of InfluxDB bucket '%s': HTTP %d %s", bucket, resp.status_code,
                    resp.text[:200])
        return None
    found = resp.json().get("buckets") or []
    if not found:
        log.warning("InfluxDB has no bucket '%s' (or the token cannot see it)", bucket)
        return None
    rules = [r for r in found[0].get("retentionRules") or [] if r.get("type") == "expire"]
    return int(rules[0].get("everySeconds") or 0) if rules else 0
