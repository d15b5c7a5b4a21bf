"""The ground segment: ``orbithil ground serve`` holds the link to a flight stack, archives
every packet in SQLite, and serves an HTTP + WebSocket API and a browser console."""
