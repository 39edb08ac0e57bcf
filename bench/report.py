"""Assembling and printing the benchmark figures."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from .measure import Figures

LIVE_SECTIONS = ("live", "live_idle", "live_single_redis", "live_cluster")
ENGINES = {"embedded": "embedded (unix socket)", "single": "one redis-server (TCP)",
           "cluster": "Redis Cluster, 3 masters + 3 replicas (TCP)"}


def _figure(*path: str) -> Callable[[Figures], float | None]:
    def get(figures: Figures) -> float | None:
        value: Any = figures
        for key in path:
            if not isinstance(value, dict) or key not in value:
                return None
            value = value[key]
        return float(value)

    return get


# What --baseline puts side by side: the baseline's own bench against ours.
_SIDE_BY_SIDE = (
    ("original path, images/s", _figure("original", "images_per_s")),
    ("direct path, images/s", _figure("direct", "images_per_s")),
    ("batch mode, images/s", _figure("batch", "images_per_s")),
    ("live, processed frames/s", _figure("live", "processed_fps")),
    ("live, capture -> event p50 ms", _figure("live", "capture_to_event_ms", "p50")),
    ("live, capture -> event p95 ms", _figure("live", "capture_to_event_ms", "p95")),
)


def summarize(results: dict[str, Figures]) -> Figures:
    """Ratios against the original path and the compute limit, from one run's results."""
    out: Figures = {"cores": os.cpu_count(), **results}
    original = results.get("original")
    ratios: dict[str, float] = {}
    if original:
        base = float(original["images_per_s"])
        for name in ("direct", "batch"):
            if name in results:
                ratios[f"{name}/original (images/s)"] = float(results[name]["images_per_s"]) / base
    if "direct" in results and "direct_opencv" in results:
        ratios["direct/direct with opencv (images/s)"] = (
            float(results["direct"]["images_per_s"]) / float(results["direct_opencv"]["images_per_s"]))
    if "live_single_redis" in results and "live_cluster" in results:
        ratios["cluster/single Redis (processed frames/s)"] = (
            float(results["live_cluster"]["processed_fps"]) / float(results["live_single_redis"]["processed_fps"]))
    out["ratios"] = ratios
    direct = results.get("direct")
    if direct:
        # The direct path's CPU an image (decode, detect, classify) on every core at once.
        per_image_s = float(direct.get("cpu_ms_per_image", sum(direct["stage_cpu_ms_per_image"].values()))) / 1000
        limit = (os.cpu_count() or 1) / per_image_s if per_image_s else float("inf")
        out["compute_limit"] = {
            "cpu_ms_per_image (decode+detect+classify)": round(per_image_s * 1000, 2),
            "images_per_s": round(limit, 1),
            "direct_fraction_of_limit": round(float(direct["images_per_s"]) / limit, 3),
        }
        if "batch" in results:
            out["compute_limit"]["batch_fraction_of_limit"] = round(
                float(results["batch"]["images_per_s"]) / limit, 3)
    return out


def format_text(summary: Figures) -> str:
    lines = [f"cores: {summary['cores']}"]
    o = summary.get("original")
    if o:
        lines.append(f"(a) original path     {o['ms_per_image']:8.1f} ms/image  {o['images_per_s']:7.1f} images/s  ({o['images']} images)")
    det = summary.get("detector")
    if det:
        lines.append(f"    detectors (CPU ms; photos: {det['photos']} stills; frame: 640x480, "
                     f"{det['planted_faces']} faces 40-60 px; * = default size)")
        lines.append(f"    {'detector':<14} {'size':>5} {'ms/photo':>9} {'photos w/ face':>15} {'ms/frame':>9} {'faces found':>12}")
        for row in det["rows"]:
            star = "*" if row.get("default") else " "
            lines.append(f"    {row['detector']:<14} {row['size']!s:>4}{star} {row['photo_cpu_ms']:9.2f} "
                         f"{row['photos_with_face']:>9}/{det['photos']:<5} {row['frame_cpu_ms']:9.2f} "
                         f"{row['frame_faces']:>8}/{det['planted_faces']:<3}")
    classifiers = summary.get("classifier")
    if classifiers:
        lines.append("    classifier alone (CPU ms per face, including crop preparation):")
        for name, row in classifiers.items():
            lines.append(f"    {name:<24} {row['model']:<36} " + ", ".join(
                f"{k} {v:.2f}" for k, v in row["cpu_ms_per_face"].items()))
    for key, title in (("direct", "(b) direct analyzer  "), ("direct_opencv", "    same, opencv     ")):
        d = summary.get(key)
        if d:
            threads = f", {d['threads']} threads; one thread {d['one_thread_images_per_s']:.1f}/s" if "threads" in d else ""
            lines.append(f"{title} {d['ms_per_image']:8.1f} ms/image  {d['images_per_s']:7.1f} images/s  "
                         f"({d['images']} images, {d['faces']} faces{threads})")
            lines.append("    one thread, per stage (wall ms / CPU ms per image): " + ", ".join(
                f"{k} {d['stage_ms_per_image'][k]:.2f}/{d['stage_cpu_ms_per_image'][k]:.2f}" for k in d["stage_ms_per_image"]))
    b = summary.get("batch")
    if b:
        lines.append(f"(c) batch via Redis   {1000 / b['images_per_s']:8.1f} ms/image  {b['images_per_s']:7.1f} images/s  "
                     f"({b['images']} images, {b['workers']} workers)")
        lines.append("    worker time per image (ms): " + ", ".join(f"{k} {v:.2f}" for k, v in b["stage_ms_per_image"].items()))
    for key in LIVE_SECTIONS:
        live = summary.get(key)
        if not live:
            continue
        lat = live["capture_to_event_ms"]
        idle = f", {live['idle_cameras']} idle cameras announced" if live.get("idle_cameras") else ""
        lines.append(f"(d) live {live['cameras']} cameras x {live['offered_fps'] / live['cameras']:.0f} fps for {live['seconds']:.0f} s, "
                     f"{live['workers']} workers{idle}; Redis: {ENGINES.get(str(live.get('engine')), live.get('engine'))}")
        lines.append(f"    ingested {live['ingested_fps']:.1f} fps, processed {live['processed_fps']:.1f} fps, "
                     f"stale skipped {live['stale_skipped']:.0f}, trimmed {live['trimmed']:.0f}")
        lines.append(f"    capture -> event: p50 {lat['p50']:.1f} ms, p95 {lat['p95']:.1f} ms, p99 {lat['p99']:.1f} ms")
        lines.append(f"    backlog (frames): first tenth {live['backlog_first_tenth']}, last tenth {live['backlog_last_tenth']}")
        lines.append("    worker time per frame (ms): " + ", ".join(f"{k} {v:.2f}" for k, v in live["stage_ms_per_frame"].items()))
    recorded = summary.get("recorded")
    if recorded:
        lines.append(f"(i) a recorded video at the workers' pace: {recorded['video_seconds']:.0f} s, {recorded['frames']} "
                     f"frames of {recorded['faces_per_frame']} faces in {recorded['wall_seconds']:.1f} s "
                     f"({recorded['video_seconds_per_second']:.1f} s of video a second, {recorded['frames_per_s']:.0f} "
                     f"frames/s, {recorded['workers']} workers); frame outcomes {recorded['frame_outcomes']}, "
                     f"{recorded['face_events']} face events, {recorded['face_events_without_a_track']} without a track")
    for key in ("tracks", "tracks_replay"):
        if summary.get(key):
            lines += _tracks_table(summary[key])
    runtimes = summary.get("runtimes")
    if runtimes:
        lines.append(f"    classifier runtimes (fresh process each, {runtimes['threads']} thread; CPU ms a face):")
        for name, row in runtimes["rows"].items():
            if "error" in row:
                lines.append(f"    {name:<8} unavailable: {row['error']}")
                continue
            lines.append(f"    {name:<8} start {row['startup_s']:5.2f} s, peak RSS {row['peak_rss_mb']:6.0f} MB, "
                         + ", ".join(f"{k} {v:.2f}" for k, v in row["cpu_ms_per_face"].items())
                         + f"  ({row['backend']}{', flip averaging' if row['flip_average'] else ''})")
    startup = summary.get("startup")
    if startup:
        lines.append(f"    start-up (median of {startup['repeats']} fresh processes): bare `import numpy, cv2` "
                     f"{startup['bare_import_numpy_cv2_s']:.2f} s")
        for name in ("baseline", "current"):
            if name in startup:
                row = startup[name]
                lines.append(f"    {name:<9} predict one photo {row['predict_s']:.2f} s ({row['predict_over_bare']:.1f}x "
                             f"bare), --help {row['help_s']:.2f} s")
    memory = summary.get("memory")
    if memory:
        for name in ("baseline", "current"):
            if name in memory:
                row = memory[name]
                lines.append(f"    {name:<9} worker serving a 15 fps camera: RSS {row['serving_rss_mb']:.0f} MB "
                             f"(peak {row['peak_rss_mb']:.0f}), frameworks mapped: "
                             f"{', '.join(row['frameworks_mapped']) or 'none'}")
    api = summary.get("api")
    if api:
        for phases, sse in api["sse"].items():
            lat, out = sse["redis_to_client_ms"], sse["redis_to_written_ms"]
            lines.append(f"(h) api: {sse['clients']} SSE clients, {sse['cameras']} cameras x {sse['fps']:.0f} fps "
                         f"({phases}) for {sse['seconds']:.0f} s: Redis -> written by the API p50 {out['p50']:.1f} ms, "
                         f"p95 {out['p95']:.1f} ms ({out['within_20ms']:.1%} within 20 ms); -> read by the clients "
                         f"p50 {lat['p50']:.1f} ms, p95 {lat['p95']:.1f} ms; API CPU {sse['api_cpu_cores']} cores, "
                         f"peak RSS {sse['api_peak_rss_mb']} MB (the clients' {sse['client_processes']} processes "
                         f"{sse['client_processes_cpu_cores']:.2f} cores); events a client {sse['events_received_per_client']['min']}-"
                         f"{sse['events_received_per_client']['max']} of {sse['events_written']}")
        hooks = api["webhooks"]
        lines.append(f"    webhooks, receiver refusing every other POST: {hooks['delivered_ids']}/{hooks['events']} ids "
                     f"delivered in {hooks['seconds']} s ({hooks['attempts']} attempts), {hooks['duplicates']} "
                     f"duplicates, {hooks['missing']} missing, in order per camera: {hooks['in_order_per_camera']}")
    baseline = summary.get("baseline")
    if baseline:
        lines.append(f"side by side, same run: baseline {baseline['tree']} | this checkout | ratio")
        for label, get in _SIDE_BY_SIDE:
            old, new = get(baseline), get(summary)
            if old is not None and new is not None:
                lines.append(f"    {label:<36} {old:10.1f} | {new:10.1f} | {new / old:6.2f}x")
    for name in ("original", "direct", "direct_opencv", "batch", "recorded", *LIVE_SECTIONS):
        section = summary.get(name)
        for proc in (section or {}).get("processes", []):
            lines.append(f"    [{name}] {proc['process']}: CPU {proc['cpu_seconds']} s ({proc['cpu_cores_used']} cores), "
                         f"peak RSS {proc['peak_rss_mb']} MB, RSS 1st/2nd half {proc['rss_first_half_mb']}/{proc['rss_second_half_mb']} MB")
    for name, value in summary.get("ratios", {}).items():
        lines.append(f"ratio {name}: {value:.1f}x")
    limit = summary.get("compute_limit")
    if limit:
        lines.append("compute limit: " + ", ".join(f"{k} {v}" for k, v in limit.items()))
    return "\n".join(lines)


# (label, path into one variant's figures, format) of the tracks table, in order.
_TRACK_ROWS = (
    ("tracks covering more than one person", ("tracked", "tracks_covering_several_people"), "{:.1%}"),
    ("ID switches per 100 face-seconds", ("tracked", "id_switches_per_100_face_seconds"), "{:.2f}"),
    ("face-frame recall (planted faces with an event)", ("face_frame_recall",), "{:.3f}"),
    ("events on no planted face, a 100 face-frames", ("false_events_per_100_face_frames",), "{:.2f}"),
    ("per-frame accuracy, raw", ("raw", "per_frame_accuracy"), "{:.3f}"),
    ("per-frame accuracy, smoothed", ("tracked", "per_frame_accuracy"), "{:.3f}"),
    ("per-person accuracy, majority of raw labels", ("raw", "person_majority_vote_accuracy"), "{:.3f}"),
    ("per-person accuracy, track's dominant emotion", ("tracked", "track_dominant_accuracy"), "{:.3f}"),
    ("label flips per face-second, raw", ("raw", "flips_per_face_second"), "{:.2f}"),
    ("label flips per face-second, smoothed", ("tracked", "flips_per_face_second"), "{:.2f}"),
    ("capture -> tracked event p50 ms", ("capture_to_tracked_event_ms", "p50"), "{:.0f}"),
    ("capture -> tracked event p95 ms", ("capture_to_tracked_event_ms", "p95"), "{:.0f}"),
    ("workers' CPU ms a frame", ("workers_cpu_ms_per_frame",), "{:.1f}"),
    ("weak detections published", ("weak_events",), "{:.0f}"),
    ("hard cuts in the clips", ("cuts", "in_clips"), "{:.0f}"),
    ("hard cuts that ended tracks (scene_cut)", ("cuts", "called"), "{:.0f}"),
    ("scene_cut where the clip did not cut", ("cuts", "called_elsewhere"), "{:.0f}"),
)


def _tracks_table(t: Figures) -> list[str]:
    """The people clips, both variants, for each checkout measured (baseline first)."""
    runs = [name for name in ("baseline", "current") if name in t]
    columns = [(name, variant) for variant in ("gaps", "queue") for name in runs]
    how = "replayed offline, every frame in order" if t.get("replay") else f"{t['workers']} workers"
    lines = [f"(e) tracks: {t['cameras']} cameras x {t['fps']:.0f} fps for {t['seconds']:.0f} s, people clips from "
             f"{t['photos']} photos, {how}; gaps: the next person after an empty spell, queue: "
             "0-0.3 s after, at the same spot, and hard cuts"]
    lines.append(f"    {'':<48} " + " ".join(f"{name[:8] + ' ' + variant:>16}" for name, variant in columns))
    for label, path, form in _TRACK_ROWS:
        values = [_figure(*path)(t[name][variant]) for name, variant in columns]
        if all(value is None for value in values):
            continue  # not measured by this scenario (latency, when replayed)
        cells = [f"{form.format(value) if value is not None else '-':>16}" for value in values]
        lines.append(f"    {label:<48} " + " ".join(cells))
    photos = t.get("photos_by_emotion")
    if photos:
        lines.append("    per-person accuracy (dominant) by true emotion, right/people; photos: "
                     + ", ".join(f"{e} {n}" for e, n in photos.items()))
    for name, variant in columns:
        per = t[name][variant].get("tracked", {}).get("track_dominant_by_emotion")
        if per:
            lines.append(f"      {name} {variant}: " + ", ".join(f"{e} {v['right']}/{v['tracks']}" for e, v in per.items()))
    cost = t.get("cost")
    if cost:
        lines.append(f"    CPU a face: descriptor {cost['descriptor_cpu_ms_per_face']:.2f} ms (worker), tracking "
                     f"(association, smoothing, state) {cost['tracking_cpu_ms_per_face']:.2f} ms (owner)")
    return lines
