"""Kokan's shared wiring: configuration, database, Redis, the app factory and the CLI."""

__version__ = "0.1.0.dev0"
