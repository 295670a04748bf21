"""Line-file replay at a chosen speed (equipment JSON lines, server CSV ...), via the shared mappings."""
