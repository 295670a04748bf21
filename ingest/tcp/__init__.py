"""TCP socket listener: JSON lines from many connections, through the shared mappings, into Kafka."""
