"""machinewatch stage: sinks."""
