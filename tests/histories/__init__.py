"""Committed workflow histories of every lifecycle path, for the replay test, and their recorder."""
