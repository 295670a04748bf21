"""PerfMon folder watcher: PDH-CSV 4.0 files from a watched folder to Kafka (see README.md)."""
