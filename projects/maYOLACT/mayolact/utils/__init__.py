"""Logging, atomic file writes and per-stage profiling, used across the package."""
