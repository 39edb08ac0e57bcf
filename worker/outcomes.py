"""What a worker writes for one consumed entry: face events and a batch result for an
analysed frame, or a dead letter. Pure construction; ``publishing.py`` writes them."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from emotion_stream.keys import Stat
from emotion_stream.schema import (
    MAX_WEAK_BOXES,
    EndOfStream,
    FaceEvent,
    FrameMessage,
    FrameRecord,
    FrameResult,
    FrameStatus,
    dead_letter_fields,
    encode_vector,
)
from model import FaceResult

from .publishing import Outcome
from .streams import Entry


@dataclass(frozen=True, slots=True)
class Origin:
    """Who produced an outcome, as events name it."""

    worker: str
    detector: str
    model: str


def _event(message: FrameMessage, face: FaceResult, index: int, count: int, processed_at: float,
           origin: Origin) -> FaceEvent:
    return FaceEvent(
        camera=message.camera,
        seq=message.seq,
        captured_at=message.captured_at,
        processed_at=processed_at,
        face_index=index,
        faces_in_frame=count,
        box=_pixels(face.box),
        emotion=face.emotion,
        confidence=round(face.confidence, 5),
        probabilities=face.probabilities_dict(),
        whole_image=face.whole_image,
        detector=origin.detector,
        model=origin.model,
        worker=origin.worker,
        name=message.name,
        landmarks=[[round(x, 1), round(y, 1)] for x, y in face.landmarks] if face.landmarks else None,
        weak=face.weak,
        position_s=message.position_s,
    )


def _document(event: FaceEvent, face: FaceResult) -> dict[str, Any]:
    """A face's entry in a frame record: its event, and what it looks like for tracking."""
    doc = asdict(event)
    if face.descriptor is not None:
        doc["descriptor"] = encode_vector(face.descriptor.tolist())
    if face.looked:
        doc["looked"] = True
    return doc


def analyzed_outcome(
    entry: Entry, message: FrameMessage, faces: list[FaceResult], processed_at: float, origin: Origin,
    *, tracking: bool = False, weak: Sequence[FaceResult] = (), scene: np.ndarray | None = None,
) -> Outcome:
    """One event per face, plus the still's result for a batch job. A frame without
    faces still gets an outcome: it is acked and counted as processed. With ``tracking``
    a video frame's events go into one frame record for the tracking stage, which
    publishes them with their track fields (in order, once per frame), with the weak
    detections (classified: tracking publishes those that continue a person), each
    face's descriptor, and the frame's scene signature."""
    events = [_event(message, face, index, len(faces), processed_at, origin) for index, face in enumerate(faces)]
    result = ""
    if message.reply_to:
        top = faces[0] if faces else None
        result = FrameResult(
            message.camera, message.seq, message.name, ok=top is not None,
            emotion=top.emotion if top else "", confidence=top.confidence if top else 0.0,
            faces=sum(1 for face in faces if not face.whole_image), whole_image=bool(top and top.whole_image),
            error="" if top else "no face",
        ).to_json()
    video = message.kind.is_video
    recorded = message.position_s is not None
    if tracking and video:
        # Weak detections are numbered after the faces: (seq, face_index) names one event.
        weak_docs = [_document(_event(message, w, len(faces) + index, len(faces), processed_at, origin), w)
                     for index, w in enumerate(weak[:MAX_WEAK_BOXES])]
        record = FrameRecord(message.camera, message.seq, message.captured_at, FrameStatus.ANALYSED,
                             [_document(e, face) for e, face in zip(events, faces)], weak_docs,
                             encode_vector(scene.tolist()) if scene is not None else "", message.position_s).to_json()
        return Outcome(entry.stream, entry.id, message.camera, captured_at=message.captured_at,
                       stat=Stat.PROCESSED, frame_record=record, recorded=recorded)
    return Outcome(entry.stream, entry.id, message.camera, [e.to_json() for e in events], result,
                   message.reply_to, captured_at=message.captured_at, stat=Stat.PROCESSED if video else "",
                   recorded=recorded)


def _pixels(box: tuple[float, float, float, float] | tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """A detector box (x, y, w, h) as the integers events and records carry."""
    return int(box[0]), int(box[1]), int(box[2]), int(box[3])


def skipped_record(message: FrameMessage | None, tracking: bool) -> str:
    """The frame record telling tracking not to wait for a video frame that will not come."""
    if not tracking or message is None or not message.kind.is_video:
        return ""
    return FrameRecord(message.camera, message.seq, message.captured_at, FrameStatus.SKIPPED,
                       position_s=message.position_s).to_json()


def end_outcome(entry: Entry, message: FrameMessage, tracking: bool) -> Outcome:
    """A finite source's end marker. A live source's goes through tracking (which ends
    its tracks first and then publishes the end event); a batch job's is published now."""
    if tracking and not message.reply_to:
        record = FrameRecord(message.camera, message.seq, message.captured_at, FrameStatus.END,
                             position_s=message.position_s).to_json()
        return Outcome(entry.stream, entry.id, message.camera, frame_record=record)
    return Outcome(entry.stream, entry.id, message.camera, [EndOfStream(message.camera, message.seq).to_json()])


def dead_letter_outcome(
    entry: Entry, reason: str, message: FrameMessage | None, worker: str, *, tracking: bool = False
) -> Outcome:
    """The dead-letter entry (reason + bounded copy of the message) and, for a batch
    job's still, a failed result so the job does not wait for it."""
    result = ""
    if message is not None and message.reply_to:
        result = FrameResult(message.camera, message.seq, message.name, ok=False, error=reason).to_json()
    fields = dead_letter_fields(
        entry.fields or {}, stream=entry.stream, entry_id=entry.id, reason=reason, worker=worker, at=time.time()
    )
    video = message is None or message.kind.is_video  # unparsed: count it
    return Outcome(entry.stream, entry.id, dead_letter=fields, result=result,
                   reply_to=message.reply_to if message else "", stat=Stat.DEAD_LETTERED if video else "",
                   frame_record=skipped_record(message, tracking))
