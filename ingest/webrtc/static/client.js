// Browser side of the gateway: camera -> WebRTC -> server; annotated video and events back.
const params = new URLSearchParams(location.search);
const token = params.get("token") || "";
const $ = (id) => document.getElementById(id);
let pc = null;
let camera = null;  // the local camera's stream, kept across sessions (no second permission prompt)
const RETRY_FIRST_MS = 1000, RETRY_MAX_MS = 30000;
let retryMs = RETRY_FIRST_MS, retryTimer = null;
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

// The gateway cannot take the session now (it is restarting, or overloaded): try again.
class TryAgain extends Error {}

async function start() {
  $("start").disabled = true;
  const live = camera && camera.getVideoTracks().some((track) => track.readyState === "live");
  if (!live) setStatus("asking for the camera");
  const stream = camera = live ? camera
    : await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
  $("local").srcObject = stream;
  setStatus("connecting");
  const session = pc = new RTCPeerConnection();
  session.addEventListener("track", (e) => { $("remote").srcObject = e.streams[0] || new MediaStream([e.track]); });
  session.addEventListener("connectionstatechange", () => { if (pc === session) setStatus(session.connectionState); });
  const channel = session.createDataChannel("events");
  channel.addEventListener("message", (e) => showEvent(JSON.parse(e.data)));
  channel.addEventListener("open", () => { retryMs = RETRY_FIRST_MS; });
  // The gateway ended the session (it restarted, or dropped it): come back by ourselves, as
  // a kiosk must. The user's own Stop clears `pc` before it closes the session.
  channel.addEventListener("close", () => { if (pc === session) tryAgain("the gateway ended the session"); });
  stream.getVideoTracks().forEach((track) => session.addTrack(track, stream));
  session.addTransceiver("video", { direction: "recvonly" });
  await session.setLocalDescription(await session.createOffer());
  await new Promise((resolve) => {  // gather all candidates: one offer, no trickle
    if (session.iceGatheringState === "complete") return resolve();
    session.addEventListener("icegatheringstatechange", () => { if (session.iceGatheringState === "complete") resolve(); });
  });
  let response;
  try {
    response = await fetch("offer", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ sdp: session.localDescription.sdp, type: session.localDescription.type, token }),
    });
  } catch (e) {
    throw new TryAgain(`the gateway does not answer (${e.message})`);
  }
  if (!response.ok) {
    const refused = `refused: ${response.status} ${await response.text()}`;
    if (response.status >= 500) throw new TryAgain(refused);
    throw new Error(refused);  // a wrong token, a bad request: trying again changes nothing
  }
  const answer = await response.json();
  $("camera").textContent = answer.camera;
  await session.setRemoteDescription(answer);
  $("stop").disabled = false;
}

function connect() {
  clearTimeout(retryTimer);
  start().catch((e) => {
    if (e instanceof TryAgain) return tryAgain(e.message);
    end();
    setStatus(`error: ${e.message || e}`);
  });
}

function tryAgain(why) {
  end();
  $("start").disabled = true;  // it starts by itself; Stop ends the waiting
  $("stop").disabled = false;
  setStatus(`${why}; connecting again in ${retryMs / 1000} s`);
  retryTimer = setTimeout(connect, retryMs);
  retryMs = Math.min(2 * retryMs, RETRY_MAX_MS);
}

function end() {
  const session = pc;
  pc = null;  // before closing: this close is ours, not the gateway's
  if (session) session.close();
  clearTimeout(retryTimer);
  $("stop").disabled = true;
  $("start").disabled = false;
}

function stop() {
  end();
  setStatus("stopped");
}

legend();
requestAnimationFrame(drawTimeline);
$("start").addEventListener("click", connect);
$("stop").addEventListener("click", stop);
if (params.get("autostart") === "1") connect();
