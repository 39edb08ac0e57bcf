"""Browser ingest over WebRTC (aiortc + aiohttp)."""

from .gateway import Gateway

__all__ = ["Gateway"]
