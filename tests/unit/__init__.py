"""Unit tests: pure functions and in-process objects only; nothing here starts a server."""
