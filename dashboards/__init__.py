"""machinewatch stage: dashboards."""
