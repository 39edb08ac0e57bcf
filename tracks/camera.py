"""One camera's tracker: reorder, associate, smooth, and the lifecycle of each track.

Pure and serialisable (``to_state``/``from_state``): the owner saves it to Redis with
every batch of events it emits, so the state and the events can never disagree.

Who is who: association gates on motion and on appearance (``association``); each track
keeps a small gallery of its face's descriptors. A cut (the frame's scene signature
jumps) ends every track of the camera. Weak detections that continue a confirmed track
are published (``weak``) and count as evidence; they never start a track.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from typing import Any

import numpy as np

from emotion_stream.labels import EMOTIONS
from emotion_stream.schema import (
    DESCRIPTOR_SIZE,
    SCENE_SIZE,
    EndOfStream,
    FaceEvent,
    FrameRecord,
    FrameStatus,
    TrackEndReason,
    TrackEvent,
    TrackEventType,
    current_scene,
    decode_vector,
    face_event_from_doc,
)
from emotion_stream.settings import Settings

from .appearance import gallery_distance, scene_change
from .association import Box, Candidate, Gates, Motion, TrackView, associate, centre, iou, size_ratio, within
from .smoothing import EmotionSmoother

RECENT = 256  # seqs remembered to recognise a duplicate record (17 s at 15 fps)
UNSEEN_TIMEOUTS = 5  # track timeouts after which only skipped frames end a track
# How long a recorded video's missing frame is waited for: every one comes (a worker that
# died holding it is reclaimed after --claim-idle-ms, 15 s by default).
RECORDED_REORDER_WINDOW_S = 30.0
WEAK_HOLD_TIMEOUTS = 2  # track timeouts that weak detections alone may hold a track
# Faces a track needs before weak detections may continue it. Its first is enough: on the
# tracks bench's clips, 3 left face-frame recall at 0.910 / 0.873 (gaps / queue), 1 gives
# 0.935 / 0.900, and neither published an event off a planted face (the appearance gate
# and WEAK_HOLD_TIMEOUTS keep a weak box from carrying a track far).
CONFIRMED_HITS = 1
GALLERY_SIZE = 4  # descriptors a track keeps (its looks over the last GALLERY_SIZE * GALLERY_EVERY faces)
GALLERY_EVERY = 3  # every so many matched faces, the newest descriptor joins the gallery
# A cut to another scene moves the colour of the background: the lower quartile of the
# colour change (CIELAB, OpenCV's 8-bit scale) over the cells of the scene signature no
# face was near in either frame (over all cells when fewer than CUT_CELLS of the 48 are)
# reaches CUT_COLOUR. Measured on the worker's records of the tracks bench's clips (8
# cameras x 60 s, both variants, photos and FER2013 faces; docs/benchmarks.md): the 128
# cuts moved it 12.0 or more, the 28,640 other frame pairs at most 3.0. People coming and
# going change the cells they cover, hence a low quantile: the median called 16 cuts
# where there was none (a person the detector missed left, with the photo they held). On
# these clips the photos people hold cover about a quarter of the frame, and the quartile
# of all cells separates as well (13.6 / 1.6); the marks keep out people who fill more.
CUT_COLOUR, CUT_CELLS, CUT_QUANTILE = 8.0, 8, 0.25
# Cells this dark (OpenCV's 8-bit L, 0-255) in both frames are not judged: a video's
# black bars. The queue clip pillarboxed to 16:9 (the bars a quarter of the cells), its
# frames replayed through the tracker: 1 of 32 cuts called with the bars judged, 31
# without them; the clip as it is, 32 either way (docs/benchmarks.md).
CUT_DARK = 16.0
# Analysed frames further apart than this are not compared (frames skipped under overload,
# a slow camera): light drifting in between adds up (the sample camera's background moves
# the quartile up to 2.2 in 0.2 s, 5.3 in 0.5 s, 10.7 in 1 s).
CUT_WITHIN_S = 0.5
# A new track this far on top of an unmatched one ends it (``_replace``); so does one whose
# box lies this much inside the other's, or holds it, at up to REPLACED_SCALE times its
# size: BlazeFace boxes some faces at two scales (66 and 98 px) on alternate frames. A box
# far smaller is a false face on a part of the face (35 px on 112) and replaces nothing.
REPLACED_IOU, REPLACED_WITHIN, REPLACED_SCALE = 0.5, 0.8, 2.0
# A looked weak detection starts a track only this far apart from every track (the share
# of the smaller box inside the other at most), and under the motion gate's overlap.
LOOKED_APART = 0.5


@dataclass(frozen=True)
class TrackerConfig:
    timeout_s: float = 1.0
    smoothing_s: float = 0.5
    switch_margin: float = 0.1
    switch_frames: int = 3
    reorder_window_s: float = 0.5
    # Class shares the model was trained under, EMOTIONS order, raised to the prior power
    # (what the dominant emotion divides by); None: the summed probabilities as they are.
    class_prior: tuple[float, ...] | None = None
    gates: Gates = Gates()
    weak_weight: float = 1.0  # a weak detection's evidence against a face's

    @classmethod
    def from_settings(cls, s: Settings, class_prior: Mapping[str, float] | None = None) -> TrackerConfig:
        """``class_prior``: the served model's training class shares (its metadata's
        ``class_prior``), raised to ``track_prior_power`` (0: not used)."""
        power = s.track_prior_power
        prior = None
        if class_prior and power > 0:
            prior = tuple(share**power if share > 0 else 0.0 for share in (class_prior.get(e, 0.0) for e in EMOTIONS))
        gates = Gates(min_iou=s.track_min_iou, max_scale=s.track_max_scale, max_appearance=s.track_max_appearance)
        return cls(s.track_timeout_s, s.track_smoothing_s, s.track_switch_margin, s.track_switch_frames,
                   s.reorder_window_s, prior, gates)


@dataclass
class Track:
    id: int
    started_at: float
    last_at: float
    last_seq: int
    motion: Motion
    smoother: EmotionSmoother
    emotion_seconds: dict[str, float] = field(default_factory=dict)  # seconds each label was shown
    evidence: list[float] = field(default_factory=list)  # per-frame probabilities summed, EMOTIONS order
    unseen_s: float = 0.0  # capture time since last seen, over frames that were looked at
    last_face_at: float = 0.0  # capture time of its last face (weak detections aside)
    gallery: list[str] = field(default_factory=list)  # descriptors kept (encode_vector), newest last
    # Its last face's descriptor, kept or not: a face is compared with it too. Looks that
    # change a little every frame (a turning head; BlazeFace boxing one up-scaled 48 px
    # face at 80 px, then 98) drift past the gate within the three faces between kept
    # ones. On the tracks replay of a clip of FER2013 faces, ID switches 1.69 -> 1.40 a 100
    # face-seconds on its gaps variant (3.13 -> 1.98 with the faces in another order);
    # the photo clips' figures stayed as they were (docs/benchmarks.md).
    latest: str = ""
    hits: int = 0  # faces matched (weak detections aside)
    last_match_seq: int = -1  # the frame it was last matched in
    # Started by a looked weak detection and no face since: its size and looks are a weak
    # box's, so a face takes it with a looser appearance gate (``CameraTracker._view``),
    # or by lying on it whatever its size (``_adopt``), and one near it ends it.
    provisional: bool = False

    def looks(self) -> list[np.ndarray]:
        kept = self.gallery if not self.latest or self.latest in self.gallery else [*self.gallery, self.latest]
        return [_decoded(d) for d in kept]

    def remember(self, descriptor: str | None) -> None:
        """Keep the face's descriptor: the first, then one in GALLERY_EVERY; and the last."""
        if descriptor:
            self.latest = descriptor
            if not self.gallery or self.hits % GALLERY_EVERY == 0:
                self.gallery = [*self.gallery, descriptor][-GALLERY_SIZE:]

    def dominant(self, prior: tuple[float, ...] | None = None) -> str:
        """The emotion best supported by all the track's frames: a soft vote over the
        summed probabilities, steadier than counting per-frame or shown labels.

        With the model's training ``prior`` (raised to ``track_prior_power``), each
        class's sum is divided by it: frames vote nearer to likelihoods p(face | emotion)
        than to posteriors, so the classes the model saw most (neutral, happy) do not win
        every close call. Not all the way: a rare class's probability has a floor (label
        smoothing puts a share of every training target on the other classes), which,
        divided by a share of 0.005 (contempt), outvotes real evidence elsewhere. Classes
        with no prior (never trained, e.g. ``uncertain``) cannot win."""
        if not self.evidence:
            return self.smoother.shown
        evidence = np.asarray(self.evidence)
        if prior is not None:
            p = np.asarray(prior)
            evidence = np.where(p > 0, evidence / np.where(p > 0, p, 1.0), -np.inf)
        return EMOTIONS[int(np.argmax(evidence))]


@dataclass
class TrackerOutput:
    """What one flush produced, in order: face event documents (JSON, with track fields),
    lifecycle events, and counts for metrics."""

    events: list[str] = field(default_factory=list)
    lifecycle: list[TrackEvent] = field(default_factory=list)
    frames: int = 0
    gaps: int = 0  # frames given up on after the reorder window
    captured: list[float] = field(default_factory=list)  # capture time of each emitted live face (latency metric)
    emotion_seconds: dict[str, float] = field(default_factory=dict)  # shown-label time added by this flush

    def merge(self, other: TrackerOutput) -> None:
        self.events += other.events
        self.lifecycle += other.lifecycle
        self.frames += other.frames
        self.gaps += other.gaps
        self.captured += other.captured
        for emotion, seconds in other.emotion_seconds.items():
            self.emotion_seconds[emotion] = self.emotion_seconds.get(emotion, 0.0) + seconds

    def __bool__(self) -> bool:
        return bool(self.events or self.lifecycle or self.frames or self.gaps)


class CameraTracker:
    def __init__(self, camera: str, config: TrackerConfig) -> None:
        self.camera = camera
        self.config = config
        self.cursor = "0-0"  # position in the camera's frame-record stream
        self.next_seq: int | None = None
        self.buffer: dict[int, tuple[FrameRecord, float]] = {}  # seq -> (record, arrival)
        self.tracks: dict[int, Track] = {}
        self.next_track_id = 1
        self.last_captured_at = 0.0
        self.last_arrival = 0.0
        self.late = 0  # records of frames tracking had already passed (published untracked)
        self.duplicates = 0  # second records of one frame (dropped)
        self.recent: list[int] = []  # the last RECENT seqs emitted, to tell duplicates from late frames
        self.last_scene = ""  # the last analysed frame's scene signature (cut detection)
        self.last_scene_at = 0.0  # ...and when that frame was captured
        # A recorded video's start on its clock (capture time - position): its frames all
        # come, and its track events say where in the video they are. None: a live camera.
        self.video_start: float | None = None

    # ------------------------------------------------------------------ input
    def add(self, record: FrameRecord, arrival: float, out: TrackerOutput) -> None:
        """Buffer a record. A record newer than everything seen but numbered lower means
        the camera restarted its numbering. One for a frame tracking already passed (a
        worker died holding it, and it was reclaimed after the reorder window) cannot
        join the tracks any more: its faces are published untracked and counted, never lost."""
        self.last_arrival = max(self.last_arrival, arrival)
        if self.next_seq is not None and record.seq < self.next_seq:
            if record.captured_at > self.last_captured_at and record.seq < self.next_seq - 1:
                self._drain(out)
                self._end_all(TrackEndReason.CAMERA_RESTARTED, self.last_captured_at, self.next_seq - 1, out)
                self.next_seq = record.seq
            elif record.seq in self.recent:
                self.duplicates += 1
                return
            else:
                self.late += 1
                out.events += [face_event_from_doc(doc).to_json() for doc in record.faces]
                self._remember(record.seq)
                return
        if record.seq in self.buffer:
            self.duplicates += 1  # workers write each frame's record once; a replayed copy
            return
        # After a restart's tracks ended on the clock they began on.
        self.video_start = None if record.position_s is None else record.captured_at - record.position_s
        self.buffer[record.seq] = (record, arrival)

    # ------------------------------------------------------------------ output
    def flush(self, now: float) -> TrackerOutput:
        """Emit every frame that is due: in seq order, skipping a missing frame once the
        oldest waiting record has waited the reorder window; end every track of a camera
        that has sent nothing for a while."""
        out = TrackerOutput()
        while self.buffer:
            window = self._reorder_window()
            if self.next_seq is None:
                # The first frame seen: wait for any before it, unless it is a source's first.
                if min(self.buffer) > 0 and now - min(a for _, a in self.buffer.values()) < window:
                    break
                self.next_seq = min(self.buffer)
            if self.next_seq in self.buffer:
                record, _ = self.buffer.pop(self.next_seq)
                self._step(record, out)
                self.next_seq += 1
            elif now - min(a for _, a in self.buffer.values()) >= window:
                first = min(self.buffer)
                out.gaps += first - self.next_seq
                self.next_seq = first
            else:
                break
        if self.tracks and now - self.last_arrival > self.config.timeout_s + self._reorder_window():
            self._drain(out)
            self._end_all(TrackEndReason.CAMERA_SILENT, self.last_captured_at, (self.next_seq or 1) - 1, out)
        return out

    def _reorder_window(self) -> float:
        """How long a missing frame is waited for (and silence, before a camera's tracks
        end): a live camera's frame is worth less late, but every frame of a recorded
        video comes, in batches of workers that go as fast as they can, which can take
        longer than the live window (one a worker died holding is reclaimed after
        --claim-idle-ms)."""
        window = self.config.reorder_window_s
        return window if self.video_start is None else max(window, RECORDED_REORDER_WINDOW_S)

    def _position(self, at: float) -> float | None:
        """Where ``at`` is in a recorded video; None on a live camera."""
        return None if self.video_start is None else max(0.0, round(at - self.video_start, 6))

    def _drain(self, out: TrackerOutput) -> None:
        """Emit everything buffered, skipping gaps (the camera stopped or restarted)."""
        for seq in sorted(self.buffer):
            if self.next_seq is not None and seq > self.next_seq:
                out.gaps += seq - self.next_seq
            self._step(self.buffer.pop(seq)[0], out)
            self.next_seq = seq + 1

    def _remember(self, seq: int) -> None:
        self.recent.append(seq)
        del self.recent[:-RECENT]

    def _step(self, record: FrameRecord, out: TrackerOutput) -> None:
        at = record.captured_at
        out.frames += 1
        self._remember(record.seq)
        elapsed = max(0.0, at - self.last_captured_at) if self.last_captured_at else 0.0
        self.last_captured_at = max(self.last_captured_at, at)
        # A skipped frame (stale under overload, or dead-lettered) was never looked at:
        # it is no evidence that a face left, so its time does not count as unseen.
        # Frames that are all skipped still end a track after UNSEEN_TIMEOUTS timeouts.
        looked = record.status is not FrameStatus.SKIPPED
        for track in list(self.tracks.values()):
            track.unseen_s += elapsed if looked else 0.0
            if track.unseen_s > self.config.timeout_s or at - track.last_at > UNSEEN_TIMEOUTS * self.config.timeout_s:
                self._end(track, TrackEndReason.TIMEOUT, at, record.seq, out)
        if record.status is FrameStatus.END:
            self._end_all(TrackEndReason.END_OF_STREAM, at, record.seq, out)
            out.events.append(EndOfStream(self.camera, record.seq).to_json())
            return
        if record.status is not FrameStatus.ANALYSED:
            return
        if self._cut(record):
            self._end_all(TrackEndReason.SCENE_CUT, at, record.seq, out)
        faces = [face_event_from_doc(doc) for doc in record.faces]
        candidates = [Candidate(_box(f.box), _descriptor(doc)) for f, doc in zip(faces, record.faces)]
        tracks = list(self.tracks.values())
        pairs = associate([self._view(t, at, record.seq, faces=True) for t in tracks], candidates, self.config.gates)
        owner = {d: tracks[t] for t, d in pairs}
        matched_ids = {track.id for track in owner.values()}
        for index, (face, candidate, doc) in enumerate(zip(faces, candidates, record.faces)):
            probabilities = [face.probabilities.get(label, 0.0) for label in EMOTIONS]
            matched = owner.get(index) or self._adopt(candidate, matched_ids, at)
            if matched is None:
                self._replace(candidate.box, matched_ids, at, record.seq, out)
                track = self._start(candidate.box, probabilities, at, record.seq, out)
            else:
                track = matched
                matched_ids.add(track.id)
                self._continue(track, candidate.box, probabilities, 1.0, at, record.seq, out)
            self._hit(track, face, doc, at, out)
        if record.weak:
            # Tracks a new face replaced are gone (``_replace``): they take no weak box.
            self._weak(record, at, [t for t in tracks if t.id not in matched_ids and t.id in self.tracks], out)

    def _hit(self, track: Track, face: FaceEvent, doc: Mapping[str, Any], at: float, out: TrackerOutput,
             weak: bool = False) -> None:
        """A face of ``track`` in this frame: counted, its looks kept, its event published."""
        if track.provisional and not weak:  # its first face: the weak box's looks go
            track.provisional, track.gallery, track.latest = False, [], ""
        track.hits += 1
        track.last_face_at = max(track.last_face_at, at)
        track.remember(doc.get("descriptor"))
        self._publish(track, face, out, weak)

    @staticmethod
    def _publish(track: Track, face: FaceEvent, out: TrackerOutput, weak: bool) -> None:
        """``face``'s event, on ``track`` with its smoothed emotion."""
        out.events.append(replace(face, weak=weak, track=track.id, track_emotion=track.smoother.shown).to_json())
        if face.position_s is None:  # a recorded video's capture times are its own clock
            out.captured.append(face.captured_at)

    def _view(self, track: Track, at: float, seq: int, faces: bool = False) -> TrackView:
        """What association sees of ``track``; to ``faces``, a provisional track has the
        looser appearance gate (its looks are a weak box's, often a part of the face); a
        track unlooked at for longer than the timeout, the tighter stale one."""
        gates = self.config.gates
        gate = gates.provisional_appearance if faces and track.provisional else None
        if at - track.last_at > self.config.timeout_s:  # unlooked at that long: its frames were skipped
            gate = min(gates.max_appearance if gate is None else gate, gates.stale_appearance)
        return TrackView(track.motion.predict(at), track.looks(), track.last_match_seq < seq - 1, gate)

    def _cut(self, record: FrameRecord) -> bool:
        """Whether this frame cut to another scene (a video file's edit, a switched
        camera): the colour of its background jumped from the last analysed frame's, at
        most CUT_WITHIN_S before it."""
        if not record.scene:
            return False
        before, before_at = self.last_scene, self.last_scene_at
        self.last_scene, self.last_scene_at = record.scene, record.captured_at
        if not before or not 0.0 <= record.captured_at - before_at <= CUT_WITHIN_S:
            return False
        a, b = (_decoded(scene, SCENE_SIZE) for scene in (before, record.scene))
        return scene_change(a, b, CUT_CELLS, CUT_QUANTILE, CUT_DARK) >= CUT_COLOUR

    def _continue(self, track: Track, box: Box, probabilities: list[float], weight: float, at: float, seq: int,
                  out: TrackerOutput) -> None:
        """``track`` seen again in frame ``seq``: time shown, smoothing, evidence, motion."""
        # Capture times may step back (an NTP step, another writer): time never runs backwards here.
        shown_before, dt = track.smoother.shown, max(0.0, at - track.last_at)
        track.emotion_seconds[shown_before] = track.emotion_seconds.get(shown_before, 0.0) + dt
        out.emotion_seconds[shown_before] = out.emotion_seconds.get(shown_before, 0.0) + dt
        previous = track.smoother.update(probabilities, at, weight)
        track.evidence = [a + weight * b for a, b in zip(track.evidence, probabilities)]
        track.motion.update(box, at)
        track.last_at, track.last_seq, track.unseen_s, track.last_match_seq = max(track.last_at, at), seq, 0.0, seq
        if previous is not None:
            out.lifecycle.append(TrackEvent(TrackEventType.EMOTION_CHANGED, self.camera, track.id, at, seq,
                                            emotion=track.smoother.shown, previous=previous,
                                            position_s=self._position(at)))

    def _weak(self, record: FrameRecord, at: float, unmatched: list[Track], out: TrackerOutput) -> None:
        """Second association (ByteTrack's): confirmed tracks no face matched take the
        frame's weak detections, through the same motion and appearance gates. A weak
        detection the worker classified is published with ``weak`` set and counts as
        evidence (``weak_weight``); a bare box (an older worker's) only keeps its track
        alive. Weak matches hold a track at most WEAK_HOLD_TIMEOUTS timeouts since its
        last face, so a lingering false detection cannot carry it onto the next person."""
        limit = WEAK_HOLD_TIMEOUTS * self.config.timeout_s
        holders = [t for t in unmatched if at - t.last_face_at <= limit and t.hits >= CONFIRMED_HITS]
        candidates = [Candidate(_box(doc["box"]), _descriptor(doc)) for doc in record.weak]
        pairs = associate([self._view(h, at, record.seq) for h in holders], candidates, self.config.gates)
        self._start_looked(record, at, candidates, {d for _, d in pairs}, out)
        for t, d in pairs:
            track, doc = holders[t], record.weak[d]
            # A weak box says where the face is, not how large: it is often part of the
            # face (72 px inside a 111 px one), and taking its size made the face's next
            # box fail the size gate: 4 of the 5 ID switches of the tracks bench's
            # 4-camera clips, replayed.
            box = _sized_like(candidates[d].box, track.motion.box)
            if "probabilities" not in doc:
                track.motion.update(box, at)
                track.unseen_s = 0.0
                continue
            face = face_event_from_doc(doc)
            probabilities = [face.probabilities.get(label, 0.0) for label in EMOTIONS]
            self._continue(track, box, probabilities, self.config.weak_weight, at, record.seq, out)
            self._publish(track, face, out, weak=True)

    def _start_looked(self, record: FrameRecord, at: float, candidates: list[Candidate], taken: set[int],
                      out: TrackerOutput) -> None:
        """Start a track of each weak detection the detector found a face in on a closer
        look (``looked``) that no track took, where no track is. On top of a track it
        may be that person's box at another scale, which the appearance gate refused,
        or the next person at that spot: a face (or the old track's timeout) decides."""
        for d, doc in enumerate(record.weak):
            box = candidates[d].box
            if d in taken or not doc.get("looked") or "probabilities" not in doc or any(
                    self._near(t.motion.predict(at), box) for t in self.tracks.values()):
                continue
            face = face_event_from_doc(doc)
            track = self._start(box, [face.probabilities.get(label, 0.0) for label in EMOTIONS], at, record.seq, out)
            track.provisional = True
            self._hit(track, face, doc, at, out, weak=True)

    def _near(self, where: Box, box: Box) -> bool:
        """Whether two boxes overlap as much as the motion gate asks, or one lies half
        inside the other: too near for a looked box to start a track of its own."""
        return iou(where, box) >= self.config.gates.min_iou or within(where, box) >= LOOKED_APART

    def _adopt(self, face: Candidate, matched: set[int], at: float) -> Track | None:
        """A provisional track no face matched that a new face lies on (as ``_replace``
        reads it) and looks like (its looser gate): the face is that track's first, not
        the start of another. Its weak box was often a part of the face, too small for
        the size gate."""
        limit = self.config.gates.provisional_appearance
        for track in self.tracks.values():
            if track.provisional and track.id not in matched and _on_top(track.motion.predict(at), face.box) and (
                    face.descriptor is None or not track.gallery
                    or gallery_distance(track.looks(), face.descriptor) <= limit):
                return track
        return None

    def _replace(self, box: Box, matched: set[int], at: float, seq: int, out: TrackerOutput) -> None:
        """End the tracks a new face starts on top of: whoever was there is not any more
        (a newcomer at the same spot), or was refused by appearance by mistake (their box
        jumped in size, so their crop and descriptor changed). Kept, such a track would go
        on taking that face's weak boxes, and the two tracks would trade one person."""
        for track in [t for t in self.tracks.values() if t.id not in matched]:
            where = track.motion.predict(at)
            # A provisional track is weak evidence: a face anywhere on it replaces it, as
            # a looked box anywhere on a track starts none (``_start_looked``).
            if _on_top(where, box) or (track.provisional and self._near(where, box)):
                self._end(track, TrackEndReason.REPLACED, at, seq, out)

    def _start(self, box: Box, probabilities: list[float], at: float, seq: int,
               out: TrackerOutput) -> Track:
        c = self.config
        smoother = EmotionSmoother(c.smoothing_s, c.switch_margin, c.switch_frames)
        smoother.update(probabilities, at)
        track = Track(self.next_track_id, at, at, seq, Motion(box, at), smoother, evidence=list(probabilities),
                      last_face_at=at, last_match_seq=seq)
        self.next_track_id += 1
        self.tracks[track.id] = track
        out.lifecycle.append(TrackEvent(TrackEventType.STARTED, self.camera, track.id, at, seq,
                                        emotion=smoother.shown, position_s=self._position(at)))
        return track

    def _end(self, track: Track, reason: TrackEndReason, at: float, seq: int, out: TrackerOutput) -> None:
        del self.tracks[track.id]
        seconds = {k: round(v, 3) for k, v in track.emotion_seconds.items() if v > 0}
        out.lifecycle.append(TrackEvent(
            TrackEventType.ENDED, self.camera, track.id, at, seq, emotion=track.dominant(self.config.class_prior),
            started_at=track.started_at, duration_s=round(max(0.0, track.last_at - track.started_at), 3),
            emotion_seconds=seconds, reason=reason.value, position_s=self._position(at),
        ))

    def _end_all(self, reason: TrackEndReason, at: float, seq: int, out: TrackerOutput) -> None:
        for track in list(self.tracks.values()):
            self._end(track, reason, at, seq, out)

    # ------------------------------------------------------------------ state
    def to_state(self) -> str:
        return json.dumps({
            "camera": self.camera, "cursor": self.cursor, "next_seq": self.next_seq,
            "buffer": [[r.to_json(), a] for r, a in self.buffer.values()],
            "tracks": [asdict(t) for t in self.tracks.values()], "next_track_id": self.next_track_id,
            "last_captured_at": self.last_captured_at, "last_arrival": self.last_arrival, "recent": self.recent,
            "last_scene": self.last_scene, "last_scene_at": self.last_scene_at, "video_start": self.video_start,
        }, separators=(",", ":"))

    @classmethod
    def from_state(cls, data: str | bytes, config: TrackerConfig) -> CameraTracker:
        doc: dict[str, Any] = json.loads(data)
        tracker = cls(doc["camera"], config)
        tracker.cursor, tracker.next_seq = doc["cursor"], doc["next_seq"]
        for raw, arrival in doc["buffer"]:
            record = FrameRecord.from_json(raw)
            tracker.buffer[record.seq] = (record, arrival)
        for t in doc["tracks"]:
            t["motion"] = Motion(**{**t["motion"], "box": tuple(t["motion"]["box"])})
            t["smoother"] = EmotionSmoother(**t["smoother"])
            # A state from before descriptors: such a track starts its gallery with its next
            # face, and counts as confirmed (it has been seen).
            t.setdefault("hits", CONFIRMED_HITS)
            t.setdefault("last_match_seq", t["last_seq"])
            tracker.tracks[t["id"]] = Track(**t)
        tracker.next_track_id = doc["next_track_id"]
        tracker.last_captured_at, tracker.last_arrival = doc["last_captured_at"], doc["last_arrival"]
        tracker.recent = list(doc.get("recent", []))
        tracker.last_scene = current_scene(str(doc.get("last_scene", "")))  # "" if an older worker's
        tracker.last_scene_at = float(doc.get("last_scene_at", 0.0))
        start = doc.get("video_start")
        tracker.video_start = float(start) if isinstance(start, (int, float)) else None
        return tracker


def _box(box: Sequence[int]) -> Box:
    x, y, w, h = box
    return float(x), float(y), float(w), float(h)


def _on_top(where: Box, box: Box) -> bool:
    """Whether a new face at ``box`` lies on a track predicted at ``where`` (REPLACED_*)."""
    return iou(where, box) >= REPLACED_IOU or (within(where, box) >= REPLACED_WITHIN
                                               and size_ratio(where, box) <= REPLACED_SCALE)


def _sized_like(box: Box, like: Box) -> Box:
    """``box``'s centre with ``like``'s size."""
    (cx, cy), (w, h) = centre(box), like[2:]
    return cx - w / 2, cy - h / 2, w, h


def _descriptor(doc: Mapping[str, Any]) -> np.ndarray | None:
    """A face document's descriptor (validated when its record was read), if it has one."""
    encoded = doc.get("descriptor")
    return _decoded(encoded) if encoded else None


@lru_cache(maxsize=4096)
def _decoded(encoded: str, size: int = DESCRIPTOR_SIZE) -> np.ndarray:
    """A descriptor (or a scene signature, compared with the frames before and after it)
    as a read-only array. Cached: a track compares every face with the descriptors it
    keeps, and decoding them again every frame was half of tracking's CPU (the tracks
    replay's queue clip, 8 cameras x 60 s). 4,096 is some 700 cameras' tracks."""
    vector = np.asarray(decode_vector(encoded, size), np.float32)
    vector.setflags(write=False)
    return vector
