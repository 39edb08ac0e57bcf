// Browser side of the gateway: camera -> WebRTC -> server; annotated video and events back.
const params = new URLSearchParams(location.search);
const token = params.get("token") || "";
const $ = (id) => document.getElementById(id);
let pc = null;
let count = 0;
const latencies = [];
const COLORS = {  // as the video overlay, in CSS
  anger: "#e62828", contempt: "#a050a0", disgust: "#3c9628", fear: "#a03cb4", happy: "#fac81e",
  neutral: "#c8c8c8", sad: "#2878c8", surprise: "#ff8c00", uncertain: "#808080",
};
const TIMELINE_S = 60;
const people = new Map();  // track id -> { spans: [{emotion, from, to}], ended }

function setStatus(text) { $("status").textContent = text; }

function showEvent(event) {
  if (event.type === "track_started" || event.type === "emotion_changed" || event.type === "track_ended") {
    showTrackEvent(event);
    return;
  }
  if (event.type !== "face") {
    setStatus(`end of stream (${event.camera})`);
    return;
  }
  count += 1;
  $("count").textContent = count;
  // Same machine or synchronised clocks: frame arrival at the gateway -> event on this page.
  latencies.push(Date.now() - event.captured_at * 1000);
  if (latencies.length > 50) latencies.shift();
  const sorted = [...latencies].sort((a, b) => a - b);
  $("latency").textContent = sorted[Math.floor(sorted.length / 2)].toFixed(0);
  if (event.track !== null && event.track !== undefined) extendTimeline(event);
  const item = document.createElement("li");
  item.className = "event";
  item.dataset.emotion = event.emotion;
  item.dataset.track = event.track ?? "";
  item.dataset.trackEmotion = event.track_emotion ?? "";
  const who = event.track !== null && event.track !== undefined ? `person ${event.track} ${event.track_emotion} · ` : "";
  item.textContent = `#${event.seq} ${who}frame: ${event.emotion} ${event.confidence.toFixed(2)} box ${event.box.join(",")}`;
  const list = $("events");
  list.prepend(item);
  while (list.children.length > 30) list.lastChild.remove();
}

function showTrackEvent(event) {
  const item = document.createElement("li");
  item.className = "lifecycle";
  item.dataset.type = event.type;
  item.textContent = event.type === "track_started" ? `person ${event.track} appeared (${event.emotion})`
    : event.type === "emotion_changed" ? `person ${event.track}: ${event.from} → ${event.to}`
    : `person ${event.track} left after ${event.duration_s.toFixed(1)} s, mostly ${event.dominant}`;
  const list = $("people");
  list.prepend(item);
  while (list.children.length > 12) list.lastChild.remove();
  if (event.type === "track_ended" && people.has(event.track)) people.get(event.track).ended = true;
}

function extendTimeline(event) {
  const at = event.captured_at;
  let person = people.get(event.track);
  if (!person) { person = { spans: [], ended: false }; people.set(event.track, person); }
  const last = person.spans[person.spans.length - 1];
  if (last && last.emotion === event.track_emotion && at - last.to < 1.5) last.to = at;
  else person.spans.push({ emotion: event.track_emotion, from: at, to: at });
}

function drawTimeline() {
  const canvas = $("timeline");
  const ctx = canvas.getContext("2d");
  const now = Date.now() / 1000;
  const rows = [...people.entries()].filter(([, p]) => p.spans.length && now - p.spans[p.spans.length - 1].to < TIMELINE_S);
  const rowH = 22;
  canvas.height = Math.max(40, 20 + rows.length * rowH);
  canvas.dataset.rows = rows.length;
  ctx.fillStyle = "#1b1b1b";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  const left = 80, width = canvas.width - left - 10;
  const x = (t) => left + width * (1 - (now - t) / TIMELINE_S);
  ctx.font = "12px system-ui";
  rows.forEach(([id, person], i) => {
    const y = 10 + i * rowH;
    ctx.fillStyle = "#ccc";
    ctx.fillText(`person ${id}`, 6, y + 14);
    for (const span of person.spans) {
      if (now - span.to > TIMELINE_S) continue;
      ctx.fillStyle = COLORS[span.emotion] || "#fff";
      ctx.fillRect(Math.max(left, x(span.from)), y + 2, Math.max(2, x(span.to) - Math.max(left, x(span.from))), rowH - 6);
    }
  });
  ctx.fillStyle = "#777";
  ctx.fillText(`last ${TIMELINE_S} s →  now`, canvas.width - 130, canvas.height - 4);
  requestAnimationFrame(drawTimeline);
}

function legend() {
  $("legend").innerHTML = Object.entries(COLORS)
    .map(([e, c]) => `<span><i style="background:${c}"></i>${e}</span>`).join(" ");
}

async function start() {
  $("start").disabled = true;
  setStatus("asking for the camera");
  const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
  $("local").srcObject = stream;
  pc = new RTCPeerConnection();
  pc.addEventListener("track", (e) => { $("remote").srcObject = e.streams[0] || new MediaStream([e.track]); });
  pc.addEventListener("connectionstatechange", () => setStatus(pc.connectionState));
  const channel = pc.createDataChannel("events");
  channel.addEventListener("message", (e) => showEvent(JSON.parse(e.data)));
  stream.getVideoTracks().forEach((track) => pc.addTrack(track, stream));
  pc.addTransceiver("video", { direction: "recvonly" });
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((resolve) => {  // gather all candidates: one offer, no trickle
    if (pc.iceGatheringState === "complete") return resolve();
    pc.addEventListener("icegatheringstatechange", () => { if (pc.iceGatheringState === "complete") resolve(); });
  });
  const response = await fetch("offer", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ sdp: pc.localDescription.sdp, type: pc.localDescription.type, token }),
  });
  if (!response.ok) {
    setStatus(`refused: ${response.status} ${await response.text()}`);
    return;
  }
  const answer = await response.json();
  $("camera").textContent = answer.camera;
  await pc.setRemoteDescription(answer);
  $("stop").disabled = false;
}

function stop() {
  if (pc) pc.close();
  pc = null;
  setStatus("stopped");
  $("stop").disabled = true;
  $("start").disabled = false;
}

legend();
requestAnimationFrame(drawTimeline);
$("start").addEventListener("click", () => start().catch((e) => setStatus(`error: ${e}`)));
$("stop").addEventListener("click", stop);
if (params.get("autostart") === "1") start().catch((e) => setStatus(`error: ${e}`));
