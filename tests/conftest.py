"""Shared fixtures. Integration tests share one control plane per session (see
tests/integration/conftest.py); unit tests need nothing."""
