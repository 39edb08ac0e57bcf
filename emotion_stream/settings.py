"""All settings, read once from the environment and overridden by CLI flags (``cli``).

Environment variables use the ``EMOTION_STREAM_`` prefix (``EMOTION_STREAM_BATCH_SIZE=32``,
any case); the Redis URL is also read from the conventional ``REDIS_URL``. Every field is
a scalar, so pydantic's own conversion of the variable's text is the whole parsing: no
settings library (pydantic-settings cost every command 85 ms of imports, `predict` an
eighth of its start-up).
"""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

ENV_PREFIX = "EMOTION_STREAM_"

REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster", "redis+sentinel")
# Hostile-input limits (images.ImageLimits uses the same defaults).
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
LOG_LEVELS: tuple[str, ...] = get_args(LogLevel)
LogFormat = Literal["text", "json"]
DetectorName = Literal["blazeface", "opencv", "mtcnn"]
DETECTORS: tuple[str, ...] = get_args(DetectorName)
ModelRuntime = Literal["auto", "litert", "onnx", "keras"]
MODEL_RUNTIMES: tuple[str, ...] = get_args(ModelRuntime)
# Longest side a frame is analysed at, per detector, when --detect-size is not given.
# BlazeFace: 256 px makes a 640x480 frame one 256x192 model input (one model run) and finds
# faces from ~40 px wide: all 8 of the bench frame, 232 of 240 in 30 generated frames
# (320 px finds all 240 for 1.7x the CPU; 192 px finds 192).
# Haar and MTCNN: 192 px, about the same faces as 480 px on 350 px photos at half the CPU.
DEFAULT_DETECT_SIZE: dict[str, int] = {"blazeface": 256, "opencv": 192, "mtcnn": 192}
# Stills no face fills are searched again at this side (model.blazeface): a photo of
# 18 people (3000x2000 or 1200x800) gave up 18 faces at 512 and 8-9 at 256.
DEFAULT_STILL_DETECT_SIZE = 512


class Settings(BaseModel):
    """``Settings(**values)``: the environment's settings with ``values`` (field name ->
    value) in their place; a bad value raises a ValidationError naming the field (or
    ``REDIS_URL``, when read from there)."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)

    # --- Redis -------------------------------------------------------------------------
    redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("REDIS_URL", "EMOTION_STREAM_REDIS_URL", "redis_url"),
        description="redis://, rediss:// (TLS) or unix:// URL; redis+cluster:// or rediss+cluster:// "
        "(any node) for a Redis Cluster; redis+sentinel://host:26379[,host:26379...]/NAME for the master "
        "Sentinel names NAME (?sentinel_password=SECRET for Sentinels that require one); unset: an embedded "
        "redis-server",
    )
    write_replicas: int = Field(
        0, ge=0, le=16,
        description="a frame counts as accepted once this many replicas have it (WAIT); not confirmed "
        "in time: counted as unconfirmed (it may be lost if its master fails). 0: the master's reply",
    )
    write_replicas_timeout_ms: int = Field(100, ge=1, le=10_000, description="longest wait for those replicas")
    # --- model -------------------------------------------------------------------------
    model_path: Path | None = Field(
        None, description="classifier: an exported .tflite/.onnx or a Keras .keras/.h5 file, with its .json "
        "metadata beside it; unset: the bundled model; 'fer2013': the FER2013 baseline (a Keras file)"
    )
    model_runtime: ModelRuntime = Field(
        "auto",
        description="where the classifier runs: auto (a file's own runtime; the bundled model in ONNX Runtime, "
        "in LiteRT for predict), "
        "litert, onnx (ONNX Runtime; CUDA with onnxruntime-gpu), or keras (the .keras file on TensorFlow, JAX or "
        "PyTorch as KERAS_BACKEND says, on a GPU when it sees one; needs the train extra)",
    )
    detector: DetectorName = Field("blazeface", description="face detector")
    detect_max_side: int | None = Field(
        None, ge=64, le=4096,
        description="longest side frames are analysed at for face detection; larger finds smaller "
        "faces for more CPU; unset: the detector's own ("
        + ", ".join(f"{name} {size}" for name, size in DEFAULT_DETECT_SIZE.items()) + ")",
    )
    still_detect_size: int = Field(
        DEFAULT_STILL_DETECT_SIZE, ge=0, le=4096,
        description="stills (batch, evaluate, predict) whose largest face is under half their size (a group, "
        "a room) are also searched for smaller faces at this longest side; larger finds smaller faces for more "
        "CPU (blazeface; the others search stills at --detect-size); 0: only the face crops' search",
    )
    uncertain_below: float | None = Field(
        None, gt=0, le=1,
        description="label a face 'uncertain' when its top calibrated probability is below this; unset: never",
    )
    still_views: int = Field(
        1, ge=1, le=8,
        description="stills (batch, evaluate, predict) classify each face through this many crop views, averaged: "
        "pairs of crops shifted 6 % of the face towards opposite compass points, one mirrored (model.views); "
        "8 scored 1-2 points higher on validation for 8x the network's work; 1: the centred crop and its mirror. "
        "Live frames always take one",
    )
    # --- worker ------------------------------------------------------------------------
    batch_size: int = Field(16, ge=1, le=1024, description="frames per micro-batch")
    # Short: on CPU a frame waiting for company costs more latency than batching saves
    # (live bench, 4 x 15 fps on 2 cores, alternate runs: p95 83 and 98 ms at 5 against
    # 144 and 122 at 20); under overload batches fill at once (66.3 against 65.7 fps
    # processed). A GPU worker wants longer batches (docker-compose's worker-gpu).
    max_wait_ms: int = Field(5, ge=0, le=10_000, description="longest wait to fill a micro-batch")
    cpu_threads: int | None = Field(
        None, ge=1, le=256,
        description="threads that decode and detect for one worker (the classifier then sees every face "
        "of a micro-batch at once); unset: the cores, shared among in-process workers",
    )
    max_frame_age_s: float = Field(
        2.0, gt=0, description="live frames waiting in Redis longer than this are skipped (Redis' clock: the time since "
        "the frame was added, whatever the camera's clock says)",
    )
    claim_idle_ms: int = Field(15_000, ge=100, description="reclaim entries pending this long")
    worker_name: str | None = Field(None, description="consumer name, unique per worker; unset: host-pid")
    # --- tracking (see tracks/) ---------------------------------------------------------
    tracking: bool = Field(
        True, description="live frames go through the tracking stage: events carry track and track_emotion"
    )
    track_owner: bool = Field(
        True, description="this worker also owns cameras' tracking (off: run `emotion-stream tracks` instead)"
    )
    track_timeout_s: float = Field(
        1.0, gt=0, le=60, description="a face unseen this long (capture time) ends its track"
    )
    track_min_iou: float = Field(0.2, ge=0, lt=1, description="least box overlap to continue a track")
    track_max_scale: float = Field(
        1.5, gt=1, le=10, description="a face growing or shrinking more than this factor between frames is someone else"
    )
    track_max_appearance: float = Field(
        0.2, gt=0, le=2,
        description="largest appearance distance (cosine, of the face descriptors) that continues a track: a "
        "different face at the same spot starts its own; 2 turns appearance off",
    )
    track_weak_score: float = Field(
        0.2, ge=0, lt=0.5,
        description="BlazeFace detections scoring from this up to 0.5 are not faces of their own but keep "
        "a tracked face's track alive when the detector's confidence dips (0: off)",
    )
    track_second_look: float = Field(
        0.6, ge=0, lt=1,
        description="a weak BlazeFace detection gets a closer look (a crop around it through the short-range "
        "model); one with a face there scoring this much may start a track where no track is (0: off)",
    )
    track_smoothing_s: float = Field(
        0.5, ge=0, le=30, description="time constant of the exponential smoothing of a track's probabilities"
    )
    track_switch_margin: float = Field(
        0.1, ge=0, lt=1, description="a new label must lead the shown one by this smoothed probability..."
    )
    track_switch_frames: int = Field(3, ge=1, le=100, description="...for this many frames in a row to replace it")
    track_prior_power: float = Field(
        0.625, ge=0, le=1, description="a track's dominant emotion weighs each emotion's summed probability by "
        "1/(the model's training share of it)**this: 1 votes with likelihoods, 0 with the model's posteriors "
        "(off); in between, rare emotions gain, but a rare one's trace of probability on every frame does not "
        "win (needs class_prior in the model's metadata; the shipped model has it)",
    )
    reorder_window_s: float = Field(
        0.5, gt=0, le=30, description="longest wait for a missing frame before tracking skips it"
    )
    track_lease_s: float = Field(
        3.0, ge=0.5, le=300, description="tracking lease of a camera; a dead owner's cameras move after this"
    )
    track_state_ttl_s: int = Field(3600, ge=60, description="tracking state of a silent camera expires after this")
    track_lookback_s: float = Field(
        10.0, ge=0, le=86_400,
        description="a camera's first tracking owner tracks the frames analysed this long before it; older ones "
        "(analysed while no owner ran) are published without a track, counted and logged",
    )
    # --- streams -----------------------------------------------------------------------
    frames_max_len: int = Field(256, ge=8, description="approximate bound of each frame stream")
    events_max_len: int = Field(10_000, ge=100, description="approximate bound of each events stream")
    dead_letter_max_len: int = Field(
        500, ge=100,
        description="approximate bound of each camera's dead-letter stream; each entry is at most 16 KiB",
    )
    # --- hostile-input limits ----------------------------------------------------------
    max_image_bytes: int = Field(DEFAULT_MAX_BYTES, ge=1024, description="largest frame/image accepted")
    max_image_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=64, description="largest width*height accepted")
    # --- ingest ------------------------------------------------------------------------
    jpeg_quality: int = Field(85, ge=10, le=100, description="JPEG quality of ingested frames (10-100)")
    # --- webrtc gateway ----------------------------------------------------------------
    webrtc_token: str | None = Field(
        None, description="access token for the WebRTC page and offer endpoint; required to listen beyond loopback"
    )
    webrtc_max_sessions: int = Field(16, ge=1, le=10_000, description="browsers served at once; more get 503")
    webrtc_connect_timeout_s: float = Field(
        20.0, gt=0, le=600, description="a peer not connected this long after its offer is closed"
    )
    webrtc_session_keep_s: int = Field(
        86_400, ge=60, description="a closed browser session's events, tracks and counts are kept this long for "
        "history (its frames are deleted at once)",
    )
    webrtc_ice_servers: str = Field(
        "", description="comma-separated STUN/TURN URLs (stun:host:3478, turn:user:pass@host:3478) for browsers "
        "behind NAT; empty: none (host candidates only, enough on a LAN; nothing is contacted)",
    )
    # --- HTTP API ----------------------------------------------------------------------
    api_host: str = Field("127.0.0.1", description="bind address of the HTTP API (0.0.0.0: all interfaces)")
    api_port: int = Field(8080, ge=0, le=65535, description="port of the HTTP API")
    api_tokens: str = Field(
        "", description="comma-separated bearer tokens the API accepts; required to listen beyond loopback"
    )
    api_cors_origin: str = Field(
        "", description="comma-separated browser origins allowed to call the API (CORS); empty: none"
    )
    api_client_buffer: int = Field(
        1000, ge=10, le=1_000_000,
        description="events an SSE client may fall behind by; a client further behind is dropped (it can resume "
        "with Last-Event-ID)",
    )
    webhooks: str = Field("", description="comma-separated http(s) URLs that receive track lifecycle events")
    webhook_secret: str | None = Field(
        None, description="HMAC-SHA256 key of the X-Emotion-Stream-Signature header of webhook deliveries"
    )
    webhook_face_events_s: float | None = Field(
        None, gt=0, le=3600,
        description="also deliver face events to webhooks, at most one per person per this many seconds; unset: none",
    )
    webhook_retry_s: float = Field(
        300.0, gt=0, le=86_400,
        description="a delivery still failing this long after its first try goes to the webhook's dead letters",
    )
    # --- observability -----------------------------------------------------------------
    metrics_host: str = Field("127.0.0.1", description="bind address of /metrics (0.0.0.0: all interfaces)")
    metrics_port: int | None = Field(
        None, ge=0, le=65535, description="serve Prometheus metrics on this port (0: any free one); unset: none"
    )
    stuck_after_s: float = Field(
        60.0, gt=0, le=3600,
        description="/healthz on the metrics port answers 503 once the event loop has not turned, or one "
        "micro-batch has been on the CPU thread, for this long (a liveness probe then restarts the service)",
    )
    log_level: LogLevel = Field("INFO", description="log verbosity")
    log_format: LogFormat = Field(
        "text", description="text: a readable line a record; json: a JSON object a line, for log collectors"
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _log_level_any_case(cls, level: object) -> object:
        # `debug` as uvicorn and others spell it; anything else is reported as given.
        return level.upper() if isinstance(level, str) and level.upper() in LOG_LEVELS else level

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, url: str | None) -> str | None:
        if url is None:
            return url
        parts = urlsplit(url)
        if parts.scheme not in REDIS_SCHEMES:
            raise ValueError(f"URL scheme must be one of {', '.join(s + '://' for s in REDIS_SCHEMES)}")
        if parts.scheme == "redis+sentinel":
            from .redis_conn import SentinelURL

            SentinelURL.parse(url)  # several hosts: urlsplit's port is no check
            return url
        try:
            parts.port  # noqa: B018 - parsing it is the check
        except ValueError:
            raise ValueError("the port must be a number from 0 to 65535") from None
        if parts.scheme != "unix" and not parts.hostname:
            raise ValueError("the URL names no host")
        return url

    @field_validator("webhooks")
    @classmethod
    def _webhook_urls(cls, urls: str) -> str:
        for url in filter(None, (u.strip() for u in urls.split(","))):
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"webhook {url!r} is not an http:// or https:// URL")
        return urls

    def __init__(self, **values: Any) -> None:
        super().__init__(**{**_environment(exclude=values.keys()), **values})

    def overridden(self, values: dict[str, Any]) -> Settings:
        """A copy with ``values`` (field name -> value) in place, validated exactly like the
        environment: a bad value raises a ValidationError naming the field."""
        if not values:
            return self
        # model_validate runs the field constraints without re-reading the environment.
        return type(self).model_validate({**self.model_dump(), **values})


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps a server to this machine."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def env_name(field: str) -> str:
    """The environment variable a setting is read from."""
    return "REDIS_URL" if field == "redis_url" else f"{ENV_PREFIX}{field.upper()}"


# Variables of the prefix that are read, but not as settings: tests' failpoints
# (emotion_stream.lifecycle).
FAILPOINTS = f"{ENV_PREFIX}FAILPOINTS"
OTHER_VARIABLES = frozenset({FAILPOINTS})
# Settings renamed: the old variable -> what to set instead.
RENAMED = {f"{ENV_PREFIX}TRACK_PRIOR_CORRECTION": f"{ENV_PREFIX}TRACK_PRIOR_POWER (0: off)"}


def unread_environment() -> list[str]:
    """A line for each ``EMOTION_STREAM_*`` variable that nothing reads (a typo, or a
    setting since renamed), which would otherwise be ignored without a word."""
    read = {name for field in Settings.model_fields for name in _variables(field)} | OTHER_VARIABLES
    lines = []
    for name in sorted(n.upper() for n in os.environ if n.upper().startswith(ENV_PREFIX)):
        if name not in read:
            instead = RENAMED.get(name)
            lines.append(f"{name} is not a setting, ignored" + (f": set {instead}" if instead else ""))
    return lines


def _environment(exclude: Collection[str] = ()) -> dict[str, str]:
    """Each setting the environment sets (variable names in any case), under its field
    name; the Redis URL under the variable it came from (REDIS_URL first), so that an
    error names what the user set."""
    variables = {name.upper(): value for name, value in os.environ.items()}
    found: dict[str, str] = {}
    for field in Settings.model_fields:
        if field in exclude:
            continue
        name = next((n for n in _variables(field) if n in variables), None)
        if name is not None:
            found[name if field == "redis_url" else field] = variables[name]
    return found


def _variables(field: str) -> tuple[str, ...]:
    """The variables a setting is read from, first found wins."""
    return ("REDIS_URL", f"{ENV_PREFIX}REDIS_URL") if field == "redis_url" else (env_name(field),)
