"""The tilefuse version: part of every cache key and artifact manifest (pyproject.toml names
the same)."""

__version__ = "0.1.0"
