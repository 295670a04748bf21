# syntax=docker/dockerfile:1
#
# The machinewatch image of the compose demo: the official Apache Flink image of the version that
# pyproject.toml pins apache-flink to, plus CPython 3.11, the project (with apache-flink) and the
# Kafka SQL connector jars. One image runs the Flink JobManager and TaskManager, the job
# submitter (the official `flink` CLI), the simulators, the Kafka -> InfluxDB writer and the
# Streamlit dashboard. Build context: the repository root (docker/compose.yaml sets it).
#
# tests/unit/test_compose.py checks these pins against pyproject.toml and the stack's Maven pom.

ARG FLINK_VERSION=2.2.1
ARG PYTHON_VERSION=3.11
ARG FLINK_KAFKA_CONNECTOR_VERSION=5.0.0-2.2

# --- Connector jars: Maven Central, resolved from the very pom the native stack uses ------------
# (flink-sql-connector-kafka and the zstd-jni it needs but does not shade).
FROM maven:3.9-eclipse-temurin-17 AS connectors
ARG FLINK_KAFKA_CONNECTOR_VERSION
COPY machinewatch/stack/provision/flink/pom.xml /build/pom.xml
RUN mvn -B -q -f /build/pom.xml dependency:copy-dependencies -DincludeScope=runtime \
        -DoutputDirectory=/build/jars -Dflink.kafka.connector.version=${FLINK_KAFKA_CONNECTOR_VERSION} \
    && ls /build/jars/flink-sql-connector-kafka-${FLINK_KAFKA_CONNECTOR_VERSION}.jar

# --- CPython 3.11 ------------------------------------------------------------------------------
# The Flink 2.2 images are Ubuntu 24.04, whose only Python is 3.12, and apache-flink 2.2.1 with this
# project pins 3.11. Flink's docs build Python from python.org sources instead; we take the
# interpreter the official python image built (Debian bookworm, glibc 2.36 <= Ubuntu 24.04's 2.39)
# and install the shared libraries it links from Ubuntu's archive. The build fails below if one
# is missing.
FROM python:${PYTHON_VERSION}-slim-bookworm AS python

# --- The image ------------------------------------------------------------------------------------
FROM flink:${FLINK_VERSION}-scala_2.12-java17
ARG PYTHON_VERSION

USER root
RUN set -eux; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates curl \
        libbz2-1.0 libexpat1 libffi8 libgdbm6t64 libgdbm-compat4t64 liblzma5 \
        libncursesw6 libreadline8t64 libsqlite3-0 libssl3t64 libuuid1 zlib1g; \
    rm -rf /var/lib/apt/lists/*
COPY --from=python /usr/local/ /usr/local/
RUN set -eux; \
    ldconfig; \
    # tkinter is left out: the slim image ships its module without Tcl/Tk, and we never use it.
    missing="$( { ldd /usr/local/bin/python${PYTHON_VERSION}; \
                  find /usr/local/lib/python${PYTHON_VERSION}/lib-dynload -name '*.so' ! -name '*tkinter*' -exec ldd {} +; } \
               | grep 'not found' || true)"; \
    if [ -n "$missing" ]; then echo "Python ${PYTHON_VERSION} lacks shared libraries: $missing" >&2; exit 1; fi; \
    python3 -c "import sys, ssl, sqlite3, ctypes, lzma, bz2, zlib, uuid, readline; \
assert sys.version_info[:2] == tuple(map(int, '${PYTHON_VERSION}'.split('.'))), sys.version"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYFLINK_CLIENT_EXECUTABLE=python3 \
    MW_STATE_DIR=/var/lib/machinewatch \
    MW_CACHE_DIR=/var/cache/machinewatch \
    PYTHONPATH=/opt/machinewatch

# Dependencies first (apache-flink is the big one), read from pyproject.toml so nothing is pinned
# twice; then the project itself, so a code change rebuilds only the last layers. The source tree
# is the import root (PYTHONPATH), as in a clone: every top-level package, sinks/ included.
WORKDIR /opt/machinewatch
COPY pyproject.toml README.md ./
RUN set -eux; \
    python3 -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt; \
    pip install -r /tmp/requirements.txt; \
    rm /tmp/requirements.txt
COPY machinewatch/ machinewatch/
COPY simulators/ simulators/
COPY ingest/ ingest/
COPY flink_jobs/ flink_jobs/
COPY sinks/ sinks/
COPY dashboards/ dashboards/
RUN pip install --no-deps -e . && machinewatch --help > /dev/null && python3 -c 'import sinks.influxdb_writer'

# The cluster's classpath gets the connector; the `flink` CLI of the submitter reads the same lib/.
COPY --from=connectors --chown=flink:flink /build/jars/ /opt/flink/lib/

# Directories the compose file mounts named volumes on: created here so the volumes start out
# owned by the user the Flink image runs as (flink, uid 9999).
RUN mkdir -p /var/lib/flink/checkpoints /var/lib/flink/savepoints /var/lib/machinewatch/secrets /var/cache/machinewatch \
    && chown -R flink:flink /var/lib/flink /var/lib/machinewatch /var/cache/machinewatch /opt/machinewatch

USER flink
# The Flink image's entrypoint stays: 'jobmanager' / 'taskmanager' start Flink, any other command
# (machinewatch ..., flink run ..., streamlit ...) runs as given.
