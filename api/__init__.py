"""The HTTP API for applications: live events over SSE, history pages, per-camera
summaries and signed webhooks, read from the Redis streams the pipeline writes.

Layer: above ``emotion_stream`` only; it never analyses or tracks, it serves what the
workers and tracking owners wrote."""
