"""machinewatch stage: ingest."""
