"""Benchmarks behind ``emotion-stream bench``: figures, never pass/fail."""
