"""Fixtures for storage_fixtures (being written)."""
