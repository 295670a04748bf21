# The machinewatch image of the compose demo: Debian bookworm with its own Python 3.11 and OpenJDK 17,
# the project (with apache-flink) in a virtual environment, and the jars Kafka and Flink need,
# provisioned by the native stack's own code. One image runs Kafka, the Flink JobManager and
# TaskManager, the job submitter, the simulator, the Kafka -> InfluxDB writer and the Streamlit
# dashboard, each with the command the native stack uses ('machinewatch stack serve ...').
#
# Build context: the repository root (docker/compose.yaml sets it). Builds reach Debian's mirror,
# PyPI and Maven Central; docker/compose.yaml builds with the host network.
# tests/unit/test_compose.py checks the pins here against pyproject.toml and config.py.

# Any Debian bookworm image: the official debian:bookworm-slim, or a local one where no registry is
# reachable (./run compose prepare imports one made with debootstrap; DEMO_BASE_IMAGE names it).
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}

# Debian bookworm's own python3 is the 3.11 that pyproject.toml (apache-flink's wheels) needs.
ARG PYTHON_VERSION=3.11
ENV DEBIAN_FRONTEND=noninteractive \
    LANG=C.UTF-8 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64 \
    MW_STATE_DIR=/var/lib/machinewatch \
    MW_CACHE_DIR=/opt/machinewatch/cache \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# The slim images leave out man pages, and openjdk's set-up fails without the man1 directory.
RUN set -eux; \
    mkdir -p /usr/share/man/man1; \
    apt-get update; \
    apt-get install -y --no-install-recommends \
        ca-certificates ca-certificates-java procps \
        python${PYTHON_VERSION} python3-venv openjdk-17-jre-headless maven; \
    rm -rf /var/lib/apt/lists/*; \
    python${PYTHON_VERSION} --version; java -version

# CA certificates to trust beyond Debian's (docker/ca-certificates/README.md): empty on most machines.
COPY docker/ca-certificates/ /usr/local/share/ca-certificates/machinewatch/
RUN update-ca-certificates

# Dependencies first (apache-flink is the big one), read from pyproject.toml so nothing is pinned
# twice; a code change then rebuilds only the last layers.
WORKDIR /opt/machinewatch
COPY pyproject.toml README.md ./
RUN set -eux; \
    python${PYTHON_VERSION} -m venv /opt/venv; \
    python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt; \
    pip install -r /tmp/requirements.txt; \
    rm /tmp/requirements.txt

# Kafka's jars and a FLINK_HOME with the Kafka connector, by the native stack's provisioning (Maven
# Central, the poms in machinewatch/stack/provision/), into MW_CACHE_DIR. Only the stack's code is
# copied for this, so other code changes do not fetch the jars again.
COPY machinewatch/__init__.py machinewatch/config.py machinewatch/names.py machinewatch/
COPY machinewatch/stack/ machinewatch/stack/
RUN set -eux; \
    PYTHONPATH=/opt/machinewatch python -c "from machinewatch.config import load_settings; \
from machinewatch.stack import Stack; Stack(load_settings()).provision(('kafka', 'flink'))"; \
    rm -rf /root/.m2

# The project, importable from its source tree as in a clone.
COPY machinewatch/ machinewatch/
COPY simulators/ simulators/
COPY ingest/ ingest/
COPY flink_jobs/ flink_jobs/
COPY sinks/ sinks/
COPY dashboards/ dashboards/
RUN set -eux; \
    pip install --no-deps -e .; \
    machinewatch --help > /dev/null; \
    python -c 'import sinks.influxdb_writer, dashboards.streamlit.data'; \
    # The connector bundle 'jobs submit' ships with each job, made now: the cache is read-only at run time.
    python -c "from machinewatch import jobs; from machinewatch.config import load_settings; \
print(jobs.connector_jar(load_settings()))"; \
    # What the containers write: state (named volumes are mounted here and start out owned alike).
    useradd --system --uid 10001 --home-dir /var/lib/machinewatch --shell /usr/sbin/nologin machinewatch; \
    mkdir -p /var/lib/machinewatch/kafka /var/lib/machinewatch/flink /var/lib/machinewatch/secrets; \
    chown -R machinewatch:machinewatch /var/lib/machinewatch; \
    # The provisioning code takes its locks in the cache dir (the provisioned files stay root's, read-only).
    chown machinewatch:machinewatch "$MW_CACHE_DIR" "$MW_CACHE_DIR"/.*.lock

USER machinewatch
CMD ["machinewatch", "--help"]
