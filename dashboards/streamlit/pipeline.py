"""The Pipeline page: the pipeline's own health, the same as ``machinewatch stack status`` prints.

Sources (when data last arrived; red after MW_PIPELINE_STALE_AFTER_S), consumer lag per group, the Flink
jobs (state, restarts, last checkpoint age) and the dead letters of the last hour per source and reason, from
``machinewatch.health``. It refreshes on its own timer (``?refresh=SECONDS``, default 10; 0 = off).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import streamlit as st

from machinewatch import health
from machinewatch.config import Settings, load_settings

# Rows that need an operator: a stale source, a job in a bad state.
RED = "background-color: #ffd6d6; color: #8b0000; font-weight: 600"
DEFAULT_REFRESH_S = 10


@st.cache_resource
def _settings() -> Settings:
    return load_settings()


def _refresh_s() -> int:
    value = st.query_params.get("refresh", "")
    return int(value) if isinstance(value, str) and value.isdigit() else DEFAULT_REFRESH_S


def _red_rows(frame: pd.DataFrame, bad: pd.Series) -> pd.io.formats.style.Styler:
    return frame.style.apply(lambda row: [RED if bad.loc[row.name] else "" for _ in row], axis=1)


def _problem(found: health.PipelineHealth, part: str) -> bool:
    if part in found.problems:
        st.warning(f"{part}: {found.problems[part]}")
        return True
    return False


def sources(found: health.PipelineHealth) -> None:
    st.subheader("Sources")
    if _problem(found, "sources"):
        return
    if not found.sources:
        st.info("no window aggregates in the last day: is anything sending, and are the jobs and the writer running?")
        return
    frame = pd.DataFrame({
        "source": [s.source for s in found.sources],
        "status": ["STALE" if s.stale else "ok" for s in found.sources],
        "last data (UTC)": [f"{s.last:%Y-%m-%d %H:%M:%S}" for s in found.sources],
        "no data for": [health.humanize(s.age_s) for s in found.sources],
    })
    bad = pd.Series([s.stale for s in found.sources])
    st.table(_red_rows(frame, bad), hide_index=True)
    st.caption(f"the newest window end of each source's readings; red when older than "
               f"{health.humanize(found.stale_after_s)} (MW_PIPELINE_STALE_AFTER_S)")


def consumer_groups(found: health.PipelineHealth) -> None:
    st.subheader("Consumer lag")
    if _problem(found, "consumer lag"):
        return
    if not found.groups:
        st.caption("no consumer group has committed offsets")
        return
    st.table(pd.DataFrame({"group": [g.group for g in found.groups], "state": [g.state or "-" for g in found.groups],
                           "lag": [g.lag for g in found.groups],
                           "topics": [", ".join(g.topics) for g in found.groups]}), hide_index=True)


def flink_jobs(found: health.PipelineHealth) -> None:
    st.subheader("Flink jobs")
    if _problem(found, "flink jobs"):
        return
    if not found.jobs:
        st.caption("no Flink jobs")
        return
    frame = pd.DataFrame({
        "job": [j.name for j in found.jobs], "state": [j.state for j in found.jobs],
        "restarts": ["-" if j.restarts is None else str(j.restarts) for j in found.jobs],
        "checkpoints": ["-" if j.checkpoints is None else str(j.checkpoints) for j in found.jobs],
        "last checkpoint": [f"{health.humanize(j.checkpoint_age_s)} ago" if j.checkpoint_age_s is not None else "-"
                            for j in found.jobs],
    })
    st.table(_red_rows(frame, pd.Series([not j.healthy for j in found.jobs])), hide_index=True)


def dead_letters(found: health.PipelineHealth) -> None:
    span = health.humanize(health.DEAD_LETTER_SPAN.total_seconds())
    total = sum(d.count for d in found.dead_letters)
    st.subheader(f"Dead letters in the last {span}: {'at least ' if found.dead_letters_capped else ''}{total}")
    if _problem(found, "dead letters"):
        return
    if found.dead_letters:
        st.table(pd.DataFrame({"source": [d.source for d in found.dead_letters],
                               "reason": [d.reason for d in found.dead_letters],
                               "letters": [d.count for d in found.dead_letters],
                               "last (UTC)": [f"{d.last:%H:%M:%S}" for d in found.dead_letters]}), hide_index=True)


def render() -> None:
    st.title("Pipeline")

    @st.fragment(run_every=_refresh_s() or None)
    def live() -> None:
        now = datetime.now(tz=UTC)
        found = health.collect(_settings(), now=now)
        stale = [s for s in found.sources if s.stale]
        failing = [j for j in found.jobs if not j.healthy]
        if stale or failing:
            st.error("; ".join([f"no data from {s.source} for {health.humanize(s.age_s)}" for s in stale]
                               + [f"Flink job {j.name} is {j.state}" for j in failing]))
        elif not found.problems:
            st.success("every source sent data recently and every Flink job is healthy")
        sources(found)
        left, right = st.columns(2)
        with left:
            consumer_groups(found)
        with right:
            flink_jobs(found)
        dead_letters(found)
        st.caption(f"updated {now:%H:%M:%S} UTC")

    live()
