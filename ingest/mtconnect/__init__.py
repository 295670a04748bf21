"""MTConnect source connector: follows an agent's /sample stream into readings and device events."""
