"""All settings, read once from the environment and overridden by CLI flags.

Environment variables use the ``EMOTION_STREAM_`` prefix (``EMOTION_STREAM_BATCH_SIZE=32``);
the Redis URL is also read from the conventional ``REDIS_URL``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DetectorName = Literal["opencv", "mtcnn"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="EMOTION_STREAM_", populate_by_name=True, extra="ignore", frozen=True
    )

    # --- Redis -------------------------------------------------------------------------
    redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("REDIS_URL", "EMOTION_STREAM_REDIS_URL", "redis_url"),
        description="redis://, rediss:// (TLS) or unix:// URL; unset = start an embedded redis-server",
    )
    # --- model -------------------------------------------------------------------------
    model_path: Path | None = Field(None, description="Keras .keras/.h5 file; unset = bundled default")
    detector: DetectorName = "opencv"
    detect_max_side: int = Field(
        192, ge=64, le=4096,
        description="frames are shrunk to this longest side for face detection (boxes map back)",
    )
    # --- worker ------------------------------------------------------------------------
    batch_size: int = Field(16, ge=1, le=1024, description="frames per micro-batch")
    max_wait_ms: int = Field(20, ge=0, le=10_000, description="longest wait to fill a micro-batch")
    max_frame_age_s: float = Field(2.0, gt=0, description="live frames older than this are skipped")
    claim_idle_ms: int = Field(15_000, ge=100, description="reclaim entries pending this long")
    worker_name: str | None = Field(None, description="consumer name; default host-pid")
    # --- streams -----------------------------------------------------------------------
    frames_max_len: int = Field(256, ge=8, description="approximate bound of each frame stream")
    events_max_len: int = Field(10_000, ge=100, description="approximate bound of each events stream")
    dead_letter_max_len: int = Field(10_000, ge=100)
    # --- hostile-input limits ----------------------------------------------------------
    max_image_bytes: int = Field(20 * 1024 * 1024, ge=1024, description="largest frame/image accepted")
    max_image_pixels: int = Field(40_000_000, ge=64, description="largest width*height accepted")
    # --- ingest ------------------------------------------------------------------------
    jpeg_quality: int = Field(85, ge=10, le=100)
    # --- webrtc gateway ----------------------------------------------------------------
    webrtc_token: str | None = Field(None, description="access token for the WebRTC page and offer endpoint")
    # --- observability -----------------------------------------------------------------
    metrics_host: str = Field("127.0.0.1", description="bind address of /metrics")
    metrics_port: int | None = Field(None, ge=0, le=65535, description="unset = no metrics server")
    log_level: str = "INFO"

    def with_args(self, args: argparse.Namespace) -> Settings:
        """Return a copy where every CLI flag that was given (not None) overrides."""
        given: dict[str, Any] = {
            name: value
            for name, value in vars(args).items()
            if name in type(self).model_fields and value is not None
        }
        return self.model_copy(update=given) if given else self


def load_settings(args: argparse.Namespace | None = None) -> Settings:
    """Settings from the environment, then CLI flags (flags win)."""
    settings = Settings()
    return settings.with_args(args) if args is not None else settings
