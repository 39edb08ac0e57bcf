"""Every Prometheus metric of the system, in one place (one namespace: ``emotion_stream_``).

Conventions: base units (``_seconds``), ``_total`` counters, histograms for latency,
labels of bounded cardinality only. Camera ids come from outside, so the camera label
goes through :func:`camera_label`, which caps the number of distinct values.
"""

from __future__ import annotations

import contextlib
import logging
import threading

from prometheus_client import Counter, Gauge, Histogram, Info

from .liveness import LIVENESS
from .schema import DeadLetterKind, SkipReason

log = logging.getLogger(__name__)

NS = "emotion_stream"
# 1 ms ... 5 s, dense where live latency targets sit (10-100 ms).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)

MAX_CAMERA_LABELS = 64
_camera_labels: set[str] = set()
_camera_lock = threading.Lock()


def camera_label(camera: str) -> str:
    """The camera id as a label value; past MAX_CAMERA_LABELS distinct ids, ``other``."""
    with _camera_lock:
        if camera in _camera_labels:
            return camera
        if len(_camera_labels) < MAX_CAMERA_LABELS:
            _camera_labels.add(camera)
            return camera
    return "other"


# ---------------------------------------------------------------- every service
TASK_FAILURES = Counter(
    f"{NS}_task_failures_total", "Background tasks that failed (the service then stops and exits 1)",
    ["service", "task"],
)

# ---------------------------------------------------------------- ingest
FRAMES_INGESTED = Counter(f"{NS}_frames_ingested_total", "Frames written to a frame stream", ["camera"])
FRAMES_UNCONFIRMED = Counter(
    f"{NS}_frames_unconfirmed_total",
    "Frames written but not confirmed by the replicas asked for (--write-replicas) in time: "
    "not counted as ingested, they are lost if their master fails before replicating them",
    ["camera"],
)
FRAMES_DROPPED = Counter(
    f"{NS}_frames_dropped_total",
    "Frames lost before reaching Redis (source errors, Redis unavailable or slower than the camera, too large)",
    ["camera", "reason"],
)
SOURCE_RECONNECTS = Counter(f"{NS}_source_reconnects_total", "Video source reopen attempts", ["camera"])
SOURCE_UP = Gauge(f"{NS}_source_up", "1 while the video source delivers frames", ["camera"])
INGEST_CAMERAS = Gauge(f"{NS}_ingest_cameras", "Cameras this ingest process reads now")
CAMERAS_FILE_APPLIED = Gauge(
    f"{NS}_ingest_cameras_file_applied", "1 when the cameras file as last read (at start or on SIGHUP) is applied, 0 when "
    "it was refused (the cameras go on as before)",
)

# ---------------------------------------------------------------- worker
FRAMES_PROCESSED = Counter(f"{NS}_frames_processed_total", "Frames analysed and published", ["camera"])
FRAMES_SKIPPED = Counter(
    f"{NS}_frames_skipped_total",
    "Frames not analysed on purpose: stale (older than max age) or trimmed (stream bound)",
    ["camera", "reason"],
)
FRAMES_DEAD_LETTERED = Counter(
    f"{NS}_frames_dead_lettered_total", "Messages moved to the dead-letter stream", ["reason"]
)
FRAMES_RECLAIMED = Counter(f"{NS}_frames_reclaimed_total", "Pending entries claimed from idle consumers")
FACES_DETECTED = Counter(f"{NS}_faces_detected_total", "Faces found in frames", ["detector"])
WHOLE_IMAGE_FALLBACKS = Counter(
    f"{NS}_whole_image_fallbacks_total", "Still images classified whole because no face was found"
)
EVENTS_PUBLISHED = Counter(f"{NS}_events_published_total", "Per-face events published", ["emotion"])
STAGE_SECONDS = Histogram(
    f"{NS}_stage_seconds",
    "Latency each frame spends in a stage: queue_wait (XADD to batch start), then the "
    "decode, detect, classify and publish time of the micro-batch it was part of",
    ["stage", "detector", "model"],
    buckets=LATENCY_BUCKETS,
)
STAGE_BUSY_SECONDS = Counter(
    f"{NS}_stage_busy_seconds_total",
    "Wall time spent in each stage, summed over batches (cost per frame = rate / frames rate)",
    ["stage"],
)
END_TO_END_SECONDS = Histogram(
    f"{NS}_end_to_end_seconds",
    "Capture to event published, per frame",
    ["detector", "model"],
    buckets=LATENCY_BUCKETS,
)
CLASSIFY_BATCH_FACES = Histogram(
    f"{NS}_classify_batch_faces", "Faces per classifier call (the accelerator's batch size)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
CPU_STAGE_QUEUE = Gauge(f"{NS}_cpu_stage_queue_frames", "Frames waiting for or in decode + detection on the CPU pool")
BATCH_FRAMES = Histogram(f"{NS}_batch_frames", "Frames per micro-batch", buckets=BATCH_BUCKETS)
BACKLOG = Gauge(
    f"{NS}_stream_backlog_frames",
    "Frames waiting in a camera stream: lag = not yet delivered, pending = delivered, not acked",
    ["camera", "state"],
)
WORKERS_ALIVE = Gauge(f"{NS}_workers_alive", "Workers with a heartbeat in the last 10 s")
INVALID_CAMERA_IDS = Counter(
    f"{NS}_invalid_camera_ids_total", "Distinct ids in the cameras set that workers refuse to consume"
)
REDIS_ERRORS = Counter(f"{NS}_redis_errors_total", "Redis connection failures seen", ["component"])
LIVENESS_PROBLEMS = Gauge(
    f"{NS}_liveness_problems",
    "What is stuck in this process (its event loop not turning, a micro-batch on the CPU thread for too "
    "long): /healthz answers 503 while above 0",
)
LIVENESS_PROBLEMS.set_function(lambda: len(LIVENESS.problems()))
REDIS_EVICTING_NODES = Gauge(
    f"{NS}_redis_evicting_nodes",
    "Redis masters set to evict keys when full (maxmemory with a policy other than noeviction): data "
    "would vanish uncounted",
)
# --- tracking
TRACKS_ACTIVE = Gauge(f"{NS}_tracks_active", "People being tracked now (this owner's cameras)")
TRACK_DURATION_SECONDS = Histogram(
    f"{NS}_track_duration_seconds", "How long tracks lasted, at their end",
    buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800),
)
EMOTION_SECONDS = Counter(
    f"{NS}_emotion_seconds_total",
    "Seconds people showed each emotion (the track's smoothed label), counted as frames arrive; "
    "its rate is the average number of people showing it",
    ["emotion"],
)
TRACKED_CAMERAS = Gauge(f"{NS}_tracked_cameras", "Cameras whose tracking this process owns")
CAMERAS_WITHOUT_OWNER = Gauge(
    f"{NS}_cameras_without_tracking_owner",
    "Cameras with analysed frames waiting and no tracking owner for a while (start `emotion-stream tracks` "
    "or a worker without --no-track-owner)",
)
TRACK_FRAMES_SKIPPED = Counter(
    f"{NS}_track_frames_skipped_total",
    "Frames tracking could not use: gap (no record within the reorder window), late (faces published "
    "untracked), before_lookback (analysed before a camera's first owner's look-back: published untracked), "
    "duplicate (a second record of a frame, dropped), malformed",
    ["reason"],
)
TRACK_HANDOVERS = Counter(
    f"{NS}_track_handovers_total", "Camera tracking leases taken (with state: resumed) or lost", ["kind"]
)
TRACKED_EVENT_SECONDS = Histogram(
    f"{NS}_tracked_event_seconds", "Capture to publication of a track-annotated face event", buckets=LATENCY_BUCKETS
)
MODEL_INFO = Info(f"{NS}_model", "Loaded model and detector, the Keras backend and its device (cpu or gpu:<name>)")

# ---------------------------------------------------------------- webrtc gateway
PEERS_CONNECTED = Gauge(f"{NS}_webrtc_peers", "Browser peer connections open")
WEBRTC_OFFERS_REFUSED = Counter(
    f"{NS}_webrtc_offers_refused_total", "Offers answered with an error: invalid, unauthorized, or full (the cap)",
    ["reason"],
)
WEBRTC_SESSIONS_CLOSED = Counter(
    f"{NS}_webrtc_sessions_closed_total", "Browser sessions closed, by why: ended, failed, connect_timeout, shutdown",
    ["reason"],
)

# ---------------------------------------------------------------- HTTP API
API_REQUESTS = Counter(f"{NS}_api_requests_total", "HTTP API requests answered", ["route", "status"])
API_REQUEST_SECONDS = Histogram(
    f"{NS}_api_request_seconds", "Time to answer an HTTP API request (SSE: to its first byte)", ["route"],
    buckets=LATENCY_BUCKETS,
)
API_SSE_CLIENTS = Gauge(f"{NS}_api_sse_clients", "Clients connected to the live event stream (SSE)")
API_SSE_DROPPED = Counter(
    f"{NS}_api_sse_clients_dropped_total",
    "SSE clients disconnected for falling more than --api-client-buffer events behind (they may resume)",
)
API_SSE_DELAY_SECONDS = Histogram(
    f"{NS}_api_sse_delay_seconds",
    "From an event's write to Redis to its write to an SSE client's connection (the latency the API adds)",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
WEBHOOK_DELIVERIES = Counter(
    f"{NS}_webhook_deliveries_total", "Webhook deliveries: delivered, failed (retried), dead_lettered",
    ["webhook", "result"],
)
WEBHOOK_SECONDS = Histogram(
    f"{NS}_webhook_delivery_seconds", "One webhook POST, to its answer", ["webhook"], buckets=LATENCY_BUCKETS
)
WEBHOOK_BACKLOG = Gauge(f"{NS}_webhook_backlog_events", "Events waiting for delivery to a webhook", ["webhook"])

STAGES = ("queue_wait", "decode", "detect", "classify", "publish")
DEAD_LETTER_KINDS = tuple(DeadLetterKind)
SKIP_REASONS = tuple(SkipReason)
DROP_REASONS = ("redis_unavailable", "redis_slow", "encode_error", "too_large", "bad_frame", "source_stalled")


def init_camera_series(camera: str, *, ingest: bool = False) -> str:
    """Create a camera's series at 0 so dashboards show zeros, not gaps, until something
    happens (Prometheus guidance: avoid missing metrics). Returns the label value."""
    label = camera_label(camera)
    FRAMES_PROCESSED.labels(label)
    for reason in SKIP_REASONS:
        FRAMES_SKIPPED.labels(label, reason)
    if ingest:
        FRAMES_INGESTED.labels(label)
        FRAMES_UNCONFIRMED.labels(label)
        SOURCE_RECONNECTS.labels(label)
        for drop in DROP_REASONS:
            FRAMES_DROPPED.labels(label, drop)
    return label


BACKLOG_STATES = ("lag", "pending")


def forget_camera(camera: str) -> None:
    """A camera withdrawn (a batch job done, a camera forgotten or dropped from a cameras
    file): its series go, and its label is free for another camera. Without this, each
    batch job a long-running worker served kept a label for good, and after
    MAX_CAMERA_LABELS of them every new camera was ``other``. (``other`` itself stays.)"""
    with _camera_lock:
        if camera not in _camera_labels:
            return
        _camera_labels.discard(camera)
    series: list[tuple[Counter | Gauge, tuple[str, ...]]] = [
        (FRAMES_PROCESSED, ()), (FRAMES_INGESTED, ()), (FRAMES_UNCONFIRMED, ()), (SOURCE_RECONNECTS, ()),
        (SOURCE_UP, ()),
        *((FRAMES_SKIPPED, (reason,)) for reason in SKIP_REASONS),
        *((FRAMES_DROPPED, (drop,)) for drop in DROP_REASONS),
        *((BACKLOG, (state,)) for state in BACKLOG_STATES),
    ]
    for metric, rest in series:
        with contextlib.suppress(KeyError):
            metric.remove(camera, *rest)


TRACK_SKIP_REASONS = ("gap", "late", "before_lookback", "duplicate", "malformed")
HANDOVER_KINDS = ("started", "resumed", "lost", "released")


def init_tracking_series() -> None:
    """Zero series for every label, so dashboards show 0 rather than nothing."""
    for reason in TRACK_SKIP_REASONS:
        TRACK_FRAMES_SKIPPED.labels(reason)
    for kind in HANDOVER_KINDS:
        TRACK_HANDOVERS.labels(kind)


def init_worker_series(detector: str, model: str, backend: str = "", device: str = "") -> None:
    from emotion_stream.labels import EMOTIONS

    for emotion in EMOTIONS:
        EVENTS_PUBLISHED.labels(emotion)
    for kind in DEAD_LETTER_KINDS:
        FRAMES_DEAD_LETTERED.labels(kind)
    for stage in STAGES:
        STAGE_BUSY_SECONDS.labels(stage)
    FACES_DETECTED.labels(detector)
    REDIS_ERRORS.labels("worker")
    MODEL_INFO.info({"model": model, "detector": detector, "backend": backend, "device": device})
