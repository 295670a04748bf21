"""InfluxDB 2.x in the local stack, and its one set-up routine: org, buckets, least-privilege tokens.

``InfluxDB.after_ready`` is that routine; ``machinewatch stack up`` runs it after starting influxd and
``machinewatch stack setup influxdb`` (the compose demo's ``influxdb-setup`` container) runs it against a
server started elsewhere, so native and docker set up the same buckets, from ``machinewatch.names``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import requests

from machinewatch import names
from machinewatch.config import Settings
from machinewatch.stack import provision
from machinewatch.stack.service import Service, ServiceStatus, StackError, write_secret


def bucket_permissions(action: str, org_id: str, bucket_ids: Iterable[str]) -> list[dict[str, Any]]:
    """Least privilege in InfluxDB 2.x terms: one action on named buckets, nothing else.

    Known limit (influxdata/influxdb#23170): 'write' on a bucket also allows deleting it.
    """
    return [{"action": action, "resource": {"type": "buckets", "id": bid, "orgID": org_id}} for bid in bucket_ids]



def bucket_retentions(settings: Settings) -> dict[str, int]:
    """Every bucket of ``names.ALL_BUCKETS`` with the retention (seconds, 0 = forever) it is created with."""
    by_bucket = {
        names.BUCKET_RAW: settings.influx_raw_retention_s,
        names.BUCKET_AGGREGATES: settings.influx_aggregates_retention_s,
        names.BUCKET_ALERTS: settings.influx_alerts_retention_s,
        names.BUCKET_HISTORY: settings.influx_history_retention_s,
        names.BUCKET_ROLLUP_1M: settings.influx_rollup_1m_retention_s,
        names.BUCKET_ROLLUP_1H: settings.influx_rollup_1h_retention_s,
    }
    missing = [b for b in names.ALL_BUCKETS if b not in by_bucket]
    if missing:
        # A bucket added to names.py needs its retention setting here, or the set-up would skip it.
        msg = f"no retention setting for the InfluxDB bucket(s) {', '.join(missing)}"
        raise StackError(msg)
    return {bucket: by_bucket[bucket] for bucket in names.ALL_BUCKETS}


class InfluxDB(Service):
    """InfluxDB 2.x OSS, set up on first start with an org, buckets and least-privilege tokens."""

    name = "influxdb"
    markers = ("influxd",)

    def address(self) -> str:
        return self.s.influx

    def provision(self) -> None:
        provision.influxd_binary(self.s)
        self.dir.mkdir(parents=True, exist_ok=True)

    def command(self) -> tuple[list[str], dict[str, str]]:
        binary = provision.influxd_binary(self.s)
        return (
            [
                str(binary), "run",
                f"--bolt-path={self.dir / 'influxd.bolt'}",
                f"--engine-path={self.dir / 'engine'}",
                f"--sqlite-path={self.dir / 'influxd.sqlite'}",
                f"--http-bind-address={self.s.bind_host}:{self.s.influx_port}",
                "--reporting-disabled",
                "--log-level=info",
                # Pipelines write their own timestamps; no UI assets are built into this binary.
            ],
            {"INFLUXD_CONFIG_PATH": str(self.dir)},
        )

    def health(self) -> dict[str, Any]:
        resp = requests.get(f"{self.address()}/health", timeout=5)
        return dict(resp.json())

    def ready(self) -> bool:
        # Serving; set-up and the write+query check follow in after_ready() (and in status()).
        return self.health().get("status") == "pass"

    def status(self) -> ServiceStatus:
        st = super().status()
        if st.ready:
            try:
                st.ready = self._write_and_query()
            except Exception as exc:  # noqa: BLE001 - status reports, never raises
                st.ready, st.detail = False, str(exc).splitlines()[0][:120]
        return st

    def version(self) -> str:
        return str(self.health().get("version", ""))

    def _needs_setup(self) -> bool:
        resp = requests.get(f"{self.address()}/api/v2/setup", timeout=5)
        resp.raise_for_status()
        return bool(resp.json().get("allowed"))

    def _api(self, method: str, path: str, token: str, **kwargs: Any) -> requests.Response:
        resp = requests.request(
            method, f"{self.address()}{path}", headers={"Authorization": f"Token {token}"}, timeout=15, **kwargs
        )
        if resp.status_code >= 400:
            # The server's own message, never the token.
            msg = f"InfluxDB {method} {path}: HTTP {resp.status_code}: {resp.text[:300]}"
            raise StackError(msg)
        return resp

    def after_ready(self) -> None:
        secrets = self.s.secrets_dir
        if self._needs_setup():
            import secrets as pysecrets

            operator = pysecrets.token_urlsafe(32)
            password = pysecrets.token_urlsafe(18)
            resp = requests.post(
                f"{self.address()}/api/v2/setup",
                json={
                    "username": self.s.influx_user, "password": password, "org": self.s.influx_org,
                    "bucket": names.BUCKET_RAW, "retentionPeriodSeconds": self.s.influx_raw_retention_s,
                    "token": operator,
                },
                timeout=15,
            )
            if resp.status_code >= 400:
                msg = f"InfluxDB setup failed: HTTP {resp.status_code}: {resp.text[:300]}"
                raise StackError(msg)
            write_secret(secrets / "influx_token", operator)
            write_secret(secrets / "influx_password", password)
            for stale in ("influx_write_token", "influx_read_token"):
                (secrets / stale).unlink(missing_ok=True)
            provision.say(f"influxdb: set up org '{self.s.influx_org}'; operator token in {secrets}")
        token = self.s.operator_token()
        org_id = self._api("GET", f"/api/v2/orgs?org={self.s.influx_org}", token).json()["orgs"][0]["id"]
        bucket_ids = {}
        created_any = False
        for bucket, seconds in bucket_retentions(self.s).items():
            resp = requests.get(
                f"{self.address()}/api/v2/buckets", params={"name": bucket, "orgID": org_id},
                headers={"Authorization": f"Token {token}"}, timeout=15,
            )
            found = resp.json().get("buckets", []) if resp.status_code == 200 else []
            if found:
                bucket_ids[bucket] = found[0]["id"]
                continue
            created = self._api(
                "POST", "/api/v2/buckets", token,
                json={"orgID": org_id, "name": bucket,
                      # No rule at all is InfluxDB's "forever".
                      "retentionRules": [{"type": "expire", "everySeconds": seconds}] if seconds else []},
            ).json()
            bucket_ids[bucket] = created["id"]
            created_any = True
            kept = f"retention {seconds}s" if seconds else "kept forever"
            provision.say(f"influxdb: created bucket '{bucket}' ({kept})")
        if created_any:
            # Tokens name their buckets: one made before this bucket existed cannot use it. Replace them.
            self._revoke_tokens(token, ("influx_write_token", "influx_read_token"))
        for filename, action, description in (
            ("influx_write_token", "write", "machinewatch pipeline (write-only)"),
            ("influx_read_token", "read", "machinewatch dashboards (read-only)"),
        ):
            if (secrets / filename).exists():
                continue
            perms = bucket_permissions(action, org_id, bucket_ids.values())
            auth = self._api(
                "POST", "/api/v2/authorizations", token,
                json={"orgID": org_id, "description": description, "permissions": perms},
            ).json()
            write_secret(secrets / filename, auth["token"])
            provision.say(f"influxdb: created {description} token in {secrets / filename}")
        self._remove_rollup_tasks(token, org_id)
        if not self._write_and_query():
            msg = "InfluxDB accepted the set-up but a test write could not be read back"
            raise StackError(msg)

    def _remove_rollup_tasks(self, token: str, org_id: str) -> None:
        """Delete the roll-up tasks an older release made: the window job makes the roll-ups now
        (machinewatch.rollups), and a task would write the same rows again from the windows."""
        from machinewatch import rollups

        for rollup in rollups.ROLLUPS:
            found = self._api("GET", "/api/v2/tasks", token,
                              params={"orgID": org_id, "name": rollup.task_name}).json().get("tasks", [])
            for task in found:
                self._api("DELETE", f"/api/v2/tasks/{task['id']}", token)
                provision.say(f"influxdb: deleted task '{rollup.task_name}': the window job makes the "
                              f"'{rollup.bucket}' rows now")

    def _revoke_tokens(self, operator: str, filenames: tuple[str, ...]) -> None:
        """Delete the pipeline's tokens (in InfluxDB and their files) so set-up makes them anew."""
        secrets = self.s.secrets_dir
        old = {(secrets / f).read_text().strip() for f in filenames if (secrets / f).exists()}
        if not old:
            return
        auths = self._api("GET", f"/api/v2/authorizations?org={self.s.influx_org}", operator).json()
        for auth in auths.get("authorizations", []):
            if auth.get("token") in old:
                self._api("DELETE", f"/api/v2/authorizations/{auth['id']}", operator)
        for f in filenames:
            (secrets / f).unlink(missing_ok=True)
        provision.say("influxdb: replaced the pipeline and dashboard tokens to cover the new bucket "
                      "(restart writers and dashboards started before)")

    def _write_and_query(self) -> bool:
        """Readiness that uses the server for real: a write with the pipeline token, read back."""
        stamp = time.time_ns()
        self._api(
            "POST", f"/api/v2/write?org={self.s.influx_org}&bucket={names.BUCKET_RAW}&precision=ns",
            self.s.write_token(), data=f"mw_stack_probe,check=ready value={stamp}i {stamp}",
        )
        flux = (
            f'from(bucket: "{names.BUCKET_RAW}") |> range(start: -1h) '
            f'|> filter(fn: (r) => r._measurement == "mw_stack_probe") |> last()'
        )
        resp = self._api(
            "POST", f"/api/v2/query?org={self.s.influx_org}", self.s.read_token(),
            json={"query": flux, "type": "flux"},
        )
        return str(stamp) in resp.text
