"""Historical file loader: CSV, JSON lines and Parquet through a declared mapping, resumable."""
