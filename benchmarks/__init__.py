"""Measurements of the registry (speed targets live here, never in the test suite)."""
