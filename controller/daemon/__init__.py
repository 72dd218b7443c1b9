"""The daemon's plumbing: systemd notification and watchdog, and the local admin HTTP server."""
