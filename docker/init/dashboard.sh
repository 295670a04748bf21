#!/usr/bin/env bash
# Compose demo: the Streamlit dashboard with the read-only token (from the mw-secrets volume).
# Until dashboards/streamlit/app.py exists in the repository, say so and exit 0 (no restart).
set -euo pipefail
app=/opt/machinewatch/dashboards/streamlit/app.py
if [ ! -f "$app" ]; then
  echo "dashboard: $app is not in this version of machinewatch yet; nothing to serve." \
       "Use the InfluxDB UI (http://127.0.0.1:8086) meanwhile."
  exit 0
fi
exec streamlit run "$app" --server.address=0.0.0.0 --server.port=8501 --server.headless=true \
  --browser.gatherUsageStats=false
