"""Test helpers that need no AWS: in-memory fakes of the services' ports (fakes.py)."""
