// Browser side of the gateway: camera -> WebRTC -> server; annotated video and events back.
const params = new URLSearchParams(location.search);
const token = params.get("token") || "";
const $ = (id) => document.getElementById(id);
let pc = null;
let count = 0;
const latencies = [];

function setStatus(text) { $("status").textContent = text; }

function showEvent(event) {
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
  const item = document.createElement("li");
  item.className = "event";
  item.dataset.emotion = event.emotion;
  item.textContent = `#${event.seq} face ${event.face_index}: ${event.emotion} ` +
    `${event.confidence.toFixed(2)} box ${event.box.join(",")}`;
  const list = $("events");
  list.prepend(item);
  while (list.children.length > 30) list.lastChild.remove();
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

$("start").addEventListener("click", () => start().catch((e) => setStatus(`error: ${e}`)));
$("stop").addEventListener("click", stop);
if (params.get("autostart") === "1") start().catch((e) => setStatus(`error: ${e}`));
