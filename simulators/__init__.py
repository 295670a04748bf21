"""machinewatch stage: simulators."""
