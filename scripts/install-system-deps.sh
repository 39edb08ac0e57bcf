#!/usr/bin/env bash
# System parts some tests drive for real: Prometheus, Chromium (WebRTC e2e), a GStreamer
# RTSP server, Debian's redis-server (TLS-capable) and redis-cli (Redis Cluster tests),
# and ffmpeg. Installs what is missing when run as root with apt; otherwise says what is
# missing (those tests skip locally and fail under CI=true).
set -euo pipefail

# package -> a file that proves it is installed
declare -A NEEDS=(
    [prometheus]=/usr/bin/prometheus
    [chromium]=/usr/bin/chromium
    [redis-server]=/usr/bin/redis-server
    [redis-tools]=/usr/bin/redis-cli
    [ffmpeg]=/usr/bin/ffmpeg
    [python3-gi]=/usr/lib/python3/dist-packages/gi/__init__.py
    [gir1.2-gst-rtsp-server-1.0]=/usr/lib/x86_64-linux-gnu/girepository-1.0/GstRtspServer-1.0.typelib
    [gstreamer1.0-rtsp]=/usr/share/doc/gstreamer1.0-rtsp
    [gstreamer1.0-plugins-base]=/usr/share/doc/gstreamer1.0-plugins-base
    [gstreamer1.0-plugins-good]=/usr/share/doc/gstreamer1.0-plugins-good
    [gstreamer1.0-plugins-ugly]=/usr/share/doc/gstreamer1.0-plugins-ugly
    [gstreamer1.0-libav]=/usr/share/doc/gstreamer1.0-libav
)

missing=()
for pkg in "${!NEEDS[@]}"; do
    if ! dpkg -s "$pkg" >/dev/null 2>&1; then
        missing+=("$pkg")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "system-deps: all present"
    exit 0
fi

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "system-deps: missing ${missing[*]} (need root + apt-get to install); dependent tests will skip" >&2
    exit 0
fi

echo "system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The Debian packages start services we do not want; tests start their own on free ports.
for svc in redis-server prometheus prometheus-node-exporter; do
    (command -v systemctl >/dev/null && systemctl stop "$svc") >/dev/null 2>&1 || true
    (command -v service >/dev/null && service "$svc" stop) >/dev/null 2>&1 || true
done
echo "system-deps: done"
