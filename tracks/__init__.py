"""Tracking: one owner per camera turns face events into people.

``camera.CameraTracker`` (pure, serialisable) puts a camera's frame records back in
``seq`` order, associates faces with tracks (``association``), smooths each track's
emotion (``smoothing``) and emits lifecycle events; ``owner.TrackOwner`` holds cameras
by fenced Redis leases and writes each step's events atomically with the tracker state,
so a new owner continues exactly where a dead one stopped.
"""

from .camera import CameraTracker, TrackerConfig, TrackerOutput
from .owner import TrackOwner

__all__ = ["CameraTracker", "TrackOwner", "TrackerConfig", "TrackerOutput"]
