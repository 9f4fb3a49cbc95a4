"""Fixtures for triton_fixtures (being written)."""
