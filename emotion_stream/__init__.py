"""emotion-stream: the contract shared by ingest/, worker/, batch/ and model/.

This package holds what every part must agree on - label names, Redis key names,
message schemas, settings, safe image decoding, metrics - and the CLI entry point.
"""

__version__ = "0.1.0"
