"""Adapters that turn each source (exchange, bot metrics, logs, process, audit) into Observations."""
