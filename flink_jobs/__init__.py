"""machinewatch stage: flink_jobs."""
