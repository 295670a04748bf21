"""machinewatch: shared core (canonical record, config, CLI, local stack)."""
