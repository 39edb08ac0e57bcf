"""Browser ingest over WebRTC (aiortc + aiohttp)."""

from .gateway import Gateway, ice_servers

__all__ = ["Gateway", "ice_servers"]
