"""Generate the Grafana dashboard JSON from the panel table below.

Why a 100-line generator instead of hand-written JSON or grafana-foundation-sdk: the
dashboard is a dozen time-series panels whose only interesting content is their PromQL,
so the queries live here as data, the JSON is derived, and tests read the same table to
run every query against a real Prometheus. The SDK would add a dependency to express
the same dozen panels.

    python dashboards/build.py          # rewrite dashboards/grafana/emotion-stream.json
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

OUT = Path(__file__).with_name("grafana") / "emotion-stream.json"
NS = "emotion_stream"
WINDOW = "[1m]"


def quantile(q: float, metric: str, by: str = "") -> str:
    group = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({group}) (rate({NS}_{metric}_bucket{WINDOW})))"


@dataclass(frozen=True)
class Panel:
    title: str
    targets: dict[str, str]  # legend -> PromQL
    unit: str = "short"
    description: str = ""
    kind: str = "timeseries"
    width: int = 12
    extra: dict[str, object] = field(default_factory=dict)


PANELS: tuple[Panel, ...] = (
    Panel(
        "Alerts firing",
        {"{{alertname}} ({{severity}})": 'sum by (alertname, severity) (ALERTS{alertstate="firing"})'},
        kind="table",
        width=24,
        description="The rules of dashboards/alerts.yml that fire now; each alert's annotations say what to look "
        "at (Prometheus' /alerts page). Empty: all is well.",
    ),
    Panel(
        "End-to-end latency (capture -> event published)",
        {
            "p50": quantile(0.5, "end_to_end_seconds"),
            "p95": quantile(0.95, "end_to_end_seconds"),
            "p99": quantile(0.99, "end_to_end_seconds"),
        },
        unit="s",
        description="Per frame, from the camera capture time to the worker publishing its events (with tracking, "
        "its frame record; the tracked event's latency is in the tracking panel).",
    ),
    Panel(
        "Stage latency p95",
        {"{{stage}}": quantile(0.95, "stage_seconds", "stage")},
        unit="s",
        description="queue_wait: XADD to batch start; decode/detect/classify/publish: the micro-batch's time in that stage.",
    ),
    Panel(
        "Stage latency p50 / p99",
        {
            "p50 {{stage}}": quantile(0.5, "stage_seconds", "stage"),
            "p99 {{stage}}": quantile(0.99, "stage_seconds", "stage"),
        },
        unit="s",
    ),
    Panel(
        "Input vs processed frames per second, per camera",
        {
            "in {{camera}}": f"sum by (camera) (rate({NS}_frames_ingested_total{WINDOW}))",
            "processed {{camera}}": f"sum by (camera) (rate({NS}_frames_processed_total{WINDOW}))",
        },
        unit="fps",
    ),
    Panel(
        "Skipped, dropped and dead-lettered frames per second",
        {
            "skipped {{camera}} {{reason}}": f"sum by (camera, reason) (rate({NS}_frames_skipped_total{WINDOW}))",
            "dropped at ingest {{camera}} {{reason}}": f"sum by (camera, reason) (rate({NS}_frames_dropped_total{WINDOW}))",
            "dead-lettered {{reason}}": f"sum by (reason) (rate({NS}_frames_dead_lettered_total{WINDOW}))",
            "unconfirmed by replicas {{camera}}": f"sum by (camera) (rate({NS}_frames_unconfirmed_total{WINDOW}))",
        },
        unit="fps",
        description="stale: older than the max frame age; trimmed: dropped by the stream bound before any worker "
        "read it; unconfirmed: written, but not on a replica in time (--write-replicas), so at risk if its master fails.",
    ),
    Panel(
        "Stream backlog per camera",
        {"{{camera}} {{state}}": f"max by (camera, state) ({NS}_stream_backlog_frames)"},
        description="lag: not yet delivered to a worker; pending: delivered, not yet acknowledged.",
    ),
    Panel(
        "Micro-batch size",
        {
            "p50": quantile(0.5, "batch_frames"),
            "p95": quantile(0.95, "batch_frames"),
            "mean": f"sum(rate({NS}_batch_frames_sum{WINDOW})) / sum(rate({NS}_batch_frames_count{WINDOW}))",
        },
    ),
    Panel(
        "Events by emotion per second",
        {"{{emotion}}": f"sum by (emotion) (rate({NS}_events_published_total{WINDOW}))"},
        unit="ops",
        extra={"fieldConfig": {"defaults": {"custom": {"stacking": {"mode": "normal"}}}}},
    ),
    Panel(
        "Work per frame by stage (CPU budget)",
        {
            "{{stage}}": f"sum by (stage) (rate({NS}_stage_busy_seconds_total{WINDOW})) "
            f"/ ignoring(stage) group_left sum(rate({NS}_frames_processed_total{WINDOW}))",
        },
        unit="s",
        description="Seconds of worker time per processed frame in each stage.",
    ),
    Panel(
        "Workers alive, faces per second, reclaimed entries",
        {
            "workers alive": f"max({NS}_workers_alive)",
            "faces/s": f"sum(rate({NS}_faces_detected_total{WINDOW}))",
            "reclaimed/s": f"sum(rate({NS}_frames_reclaimed_total{WINDOW}))",
        },
    ),
    Panel(
        "Source reconnects and Redis errors (5 min)",
        {
            "reconnects {{camera}}": f"sum by (camera) (increase({NS}_source_reconnects_total[5m]))",
            "redis errors {{component}}": f"sum by (component) (increase({NS}_redis_errors_total[5m]))",
        },
    ),
    Panel(
        "People tracked now",
        {
            "people": f"sum({NS}_tracks_active)",
            "cameras tracked": f"sum({NS}_tracked_cameras)",
        },
        description="Tracks open across all tracking owners, and the cameras they hold.",
    ),
    Panel(
        "People by emotion (smoothed)",
        {"{{emotion}}": f"sum by (emotion) (rate({NS}_emotion_seconds_total{WINDOW}))"},
        description="Emotion-seconds per second: the average number of people showing each emotion.",
        extra={"fieldConfig": {"defaults": {"custom": {"stacking": {"mode": "normal"}}}}},
    ),
    Panel(
        "Track duration (how long people stay)",
        {
            "p50": quantile(0.5, "track_duration_seconds"),
            "p95": quantile(0.95, "track_duration_seconds"),
        },
        unit="s",
    ),
    Panel(
        "Capture -> track-annotated event, and frames tracking could not use",
        {
            "p50": quantile(0.5, "tracked_event_seconds"),
            "p95": quantile(0.95, "tracked_event_seconds"),
            "unused/s {{reason}}": f"sum by (reason) (rate({NS}_track_frames_skipped_total{WINDOW}))",
        },
        description="gap: no record within the reorder window; late: published without a track.",
    ),
    Panel("HTTP API and webhooks", {}, kind="row"),
    Panel(
        "API: requests, live clients, dropped clients",
        {
            "{{route}} {{status}}/s": f"sum by (route, status) (rate({NS}_api_requests_total{WINDOW}))",
            "SSE clients": f"sum({NS}_api_sse_clients)",
            "dropped (5 min)": f"sum(increase({NS}_api_sse_clients_dropped_total[5m]))",
        },
        description="Dropped: SSE clients that fell --api-client-buffer events behind (they may resume).",
    ),
    Panel(
        "API: event in Redis -> handed to SSE clients, and answer times",
        {
            "SSE p95": quantile(0.95, "api_sse_delay_seconds"),
            "{{route}} p95": quantile(0.95, "api_request_seconds", "route"),
        },
        unit="s",
    ),
    Panel(
        "Webhooks: deliveries, backlog, latency",
        {
            "{{result}}/s {{webhook}}": f"sum by (webhook, result) (rate({NS}_webhook_deliveries_total{WINDOW}))",
            "backlog {{webhook}}": f"sum by (webhook) ({NS}_webhook_backlog_events)",
            "p95 s {{webhook}}": quantile(0.95, "webhook_delivery_seconds", "webhook"),
        },
        description="failed: refused or unreachable, retried; dead_lettered: refused for the whole retry window.",
    ),
    Panel(
        "Model, detector, backend and device",
        {"{{model}} / {{detector}} on {{backend}} {{device}}": f"count by (model, detector, backend, device) ({NS}_model_info)"},
        kind="table",
    ),
)


def dashboard() -> dict[str, object]:
    panels: list[dict[str, object]] = []
    x = y = 0
    for i, p in enumerate(PANELS):
        if p.kind == "row":  # a titled band across the width; the panels after it sit below
            y += 8 if x else 0
            panels.append({"id": i + 1, "type": "row", "title": p.title, "collapsed": False, "panels": [],
                           "targets": [], "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}})
            x, y = 0, y + 1
            continue
        panel: dict[str, object] = {
            "id": i + 1,
            "type": p.kind,
            "title": p.title,
            "description": p.description,
            "datasource": {"type": "prometheus", "uid": "prometheus"},
            "gridPos": {"h": 8, "w": p.width, "x": x, "y": y},
            "fieldConfig": {"defaults": {"unit": p.unit}, "overrides": []},
            "targets": [
                {"refId": chr(ord("A") + j), "expr": expr, "legendFormat": legend,
                 "datasource": {"type": "prometheus", "uid": "prometheus"}}
                for j, (legend, expr) in enumerate(p.targets.items())
            ],
        }
        for key, value in p.extra.items():
            if isinstance(value, dict) and isinstance(panel.get(key), dict):
                panel[key] = {**panel[key], **value}  # type: ignore[dict-item]
            else:
                panel[key] = value
        panels.append(panel)
        x = (x + p.width) % 24
        y += 0 if x else 8
    return {
        "uid": "emotion-stream",
        "title": "emotion-stream",
        "tags": ["emotion-stream"],
        "timezone": "browser",
        "refresh": "5s",
        "time": {"from": "now-15m", "to": "now"},
        "schemaVersion": 39,
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


def all_queries(document: dict[str, object]) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of a dashboard JSON document."""
    return [
        (panel["title"], target["expr"])  # type: ignore[index]
        for panel in document["panels"]  # type: ignore[union-attr]
        for target in panel["targets"]  # type: ignore[index]
    ]


if __name__ == "__main__":
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(render())
    print(f"wrote {OUT} ({len(PANELS)} panels)")
