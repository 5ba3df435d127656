// The page of `voxsep serve`: upload or record, follow each job, show the count and the talkers.
// Plain JS, no build step. Every text that comes from the server or the user is set with
// textContent (never innerHTML). API: see voxsep/web/app.py.
"use strict";

const HEADERS = { "X-Requested-With": "voxsep" };
const POLL_MS = 400;
let INFO = null;
let UPLOADS = 0;

const $ = (selector, root = document) => root.querySelector(selector);

function notice(text) {
  const box = $("#notice");
  box.textContent = text || "";
  box.hidden = !text;
}

function formatBytes(n) {
  return n >= 1048576 ? `${(n / 1048576).toFixed(1)} MB` : `${Math.max(1, Math.round(n / 1024))} kB`;
}

async function errorText(response) {
  try {
    const body = await response.json();
    if (body && body.error) return body.error;
  } catch (e) { /* not JSON */ }
  return `the server answered ${response.status} ${response.statusText}`;
}

// ------------------------------------------------------------------------------------------------
// Start: what the server takes
// ------------------------------------------------------------------------------------------------
async function loadInfo() {
  const response = await fetch("/api/info", { cache: "no-store" });
  if (!response.ok) throw new Error(await errorText(response));
  INFO = await response.json();
  $("#model-info").textContent =
    `Model: ${INFO.model} (1 to ${INFO.max_speakers} talkers, ${INFO.sample_rate / 1000} kHz)` +
    (INFO.enhancer ? `; denoiser: ${INFO.enhancer}` : "");
  $("#limits").textContent =
    `Files up to ${INFO.max_upload_mb} MB and ${INFO.max_duration} long (${INFO.extensions.join(", ")}). ` +
    `Uploads and results are deleted ${INFO.keep} after they are done; files are separated one at a time.`;
  const select = $("#speakers");
  for (let k = 1; k <= INFO.max_speakers; k++) select.append(new Option(String(k), String(k)));
  if (INFO.enhancer) {
    $("#enhancer-name").textContent = INFO.enhancer;
    $("#enhance-option").hidden = false;
  }
}

// ------------------------------------------------------------------------------------------------
// One card per upload
// ------------------------------------------------------------------------------------------------
function newCard(name) {
  const card = $("#job-template").content.firstElementChild.cloneNode(true);
  card.dataset.upload = String(++UPLOADS);
  $(".name", card).textContent = name;
  $(".remove", card).addEventListener("click", () => removeCard(card));
  $("#jobs").prepend(card);
  return card;
}

function setStatus(card, state, text, fraction) {
  card.dataset.state = state;
  $(".status-text", card).textContent = text;
  const bar = $("progress", card);
  if (fraction === null || fraction === undefined) bar.removeAttribute("value");
  else bar.value = Math.round(100 * fraction);
}

function showError(card, text) {
  card.dataset.state = "error";
  const box = $(".error", card);
  box.textContent = text;
  box.hidden = false;
}

async function removeCard(card) {
  const id = card.dataset.job;
  if (id && card.dataset.state !== "running" && card.dataset.state !== "uploading") {
    await fetch(`/api/jobs/${id}`, { method: "DELETE", headers: HEADERS }).catch(() => null);
  }
  card.dataset.removed = "1";
  card.remove();
}

function upload(file) {
  const card = newCard(file.name);
  if (INFO && file.size > INFO.max_upload_bytes) {
    showError(card, `${file.name}: ${formatBytes(file.size)}, larger than ${INFO.max_upload_mb} MB, ` +
      "the most this server takes");
    return card;
  }
  if (file.size === 0) {
    showError(card, `${file.name}: empty file (0 bytes)`);
    return card;
  }
  const params = new URLSearchParams({ name: file.name });
  if ($("#speakers").value) params.set("speakers", $("#speakers").value);
  if ($("#enhance").checked) params.set("enhance", "1");
  const xhr = new XMLHttpRequest();
  xhr.open("POST", `/api/jobs?${params}`);
  xhr.setRequestHeader("X-Requested-With", "voxsep");
  xhr.setRequestHeader("Content-Type", "application/octet-stream");
  xhr.upload.onprogress = (e) => {
    if (e.lengthComputable) {
      setStatus(card, "uploading", `Uploading ${formatBytes(e.loaded)} of ${formatBytes(e.total)}`, e.loaded / e.total);
    }
  };
  xhr.onload = () => {
    let body = null;
    try { body = JSON.parse(xhr.responseText); } catch (e) { /* not JSON */ }
    if (xhr.status === 201 && body) {
      follow(card, body);
    } else {
      showError(card, (body && body.error) || `upload failed (${xhr.status} ${xhr.statusText})`);
    }
  };
  xhr.onerror = () => showError(card, `${file.name}: the upload failed (connection closed; is the server running?)`);
  setStatus(card, "uploading", "Uploading…", 0);
  xhr.send(file);
  return card;
}

function uploadAll(files) {
  notice("");
  for (const file of files) upload(file);
}

// ------------------------------------------------------------------------------------------------
// Following a job until it ends
// ------------------------------------------------------------------------------------------------
function follow(card, job) {
  card.dataset.job = job.id;
  update(card, job);
  const tick = async () => {
    if (card.dataset.removed || card.dataset.job !== job.id) return;
    let response;
    try {
      response = await fetch(`/api/jobs/${job.id}`, { cache: "no-store" });
    } catch (e) {
      setStatus(card, card.dataset.state, "Waiting for the server…", null);
      setTimeout(tick, 2000);
      return;
    }
    if (!response.ok) {
      showError(card, await errorText(response));
      return;
    }
    const current = await response.json();
    update(card, current);
    if (current.state !== "done" && current.state !== "error") setTimeout(tick, POLL_MS);
  };
  setTimeout(tick, POLL_MS);
}

function update(card, job) {
  if (job.state === "queued") {
    const ahead = job.jobs_ahead || 0;
    setStatus(card, "queued", ahead ? `Waiting: ${ahead} file${ahead > 1 ? "s" : ""} ahead` : "Waiting…", 0);
  } else if (job.state === "running") {
    const stage = job.stage.charAt(0).toUpperCase() + job.stage.slice(1);
    setStatus(card, "running", `${stage}… ${Math.round(100 * job.progress)} %`, job.progress);
  } else if (job.state === "error") {
    showError(card, job.message);
  } else if (job.state === "done") {
    showResult(card, job);
  }
}

// ------------------------------------------------------------------------------------------------
// The result: count, probabilities, force a count, one player per talker
// ------------------------------------------------------------------------------------------------
function drawChart(chart, probabilities, chosen) {
  chart.replaceChildren();
  probabilities.forEach((p, k) => {
    const row = [document.createElement("span"), document.createElement("span"), document.createElement("span")];
    row[0].className = "k";
    row[0].textContent = k === 1 ? "1 talker" : `${k} talkers`;
    row[1].className = "track";
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.width = `${(100 * p).toFixed(1)}%`;
    row[1].append(fill);
    row[2].className = "p";
    row[2].textContent = `${(100 * p).toFixed(1)} %`;
    for (const cell of row) {
      cell.dataset.count = String(k);
      if (k === chosen) cell.classList.add("chosen");
      chart.append(cell);
    }
  });
  chart.setAttribute("aria-label", "Probability of each number of talkers: " +
    probabilities.map((p, k) => `${k}: ${(100 * p).toFixed(0)} %`).join(", "));
}

function showResult(card, job) {
  const r = job.result;
  card.dataset.state = "done";
  card.dataset.count = String(r.count);
  $(".error", card).hidden = true;
  $(".meta", card).textContent = `${r.duration_text}` + (r.enhanced_with ? `, denoised (${r.enhanced_with})` : "");
  const result = $(".result", card);
  result.hidden = false;
  $(".count-label", card).textContent = r.count_given ? "Number of talkers (chosen)" : "Estimated number of talkers";
  $(".count-value", card).textContent = String(r.count);
  const probabilities = r.estimated_probabilities || r.probabilities || [];
  const confidence = $(".confidence", card);
  confidence.textContent = "";
  if (!r.count_given && probabilities.length > r.count) {
    confidence.textContent = `(probability ${probabilities[r.count].toFixed(2)})`;
  } else if (r.count_given && probabilities.length) {
    const best = probabilities.indexOf(Math.max(...probabilities));
    confidence.textContent = `(the model estimated ${best})`;
  }
  const chart = $(".chart", card);
  chart.hidden = !probabilities.length;
  if (probabilities.length) drawChart(chart, probabilities, r.count_given ? probabilities.indexOf(Math.max(...probabilities)) : r.count);

  const force = $(".force", card);
  const select = $(".force-count", card);
  if (!select.options.length) {
    for (let k = 1; k <= INFO.max_speakers; k++) select.append(new Option(String(k), String(k)));
  }
  select.value = String(Math.min(INFO.max_speakers, Math.max(1, r.count === 0 ? 1 : r.count)));
  const forceEnhance = $(".force-enhance", card);
  forceEnhance.hidden = !INFO.enhancer;
  $("input", forceEnhance).checked = Boolean(job.enhance);
  force.onsubmit = (event) => {
    event.preventDefault();
    rerun(card, job.id, select.value, $("input", forceEnhance).checked);
  };

  $(".mixture img", card).src = r.mixture_spectrogram;
  $(".no-talkers", card).hidden = r.count !== 0;
  const talkers = $(".talkers", card);
  talkers.replaceChildren();
  for (const source of r.sources) {
    const figure = $("#talker-template").content.firstElementChild.cloneNode(true);
    $(".label", figure).textContent = source.label;
    const link = $(".download", figure);
    link.href = source.download;
    link.setAttribute("download", source.filename);
    link.textContent = `Download ${source.filename}`;
    $("audio", figure).src = source.audio;
    const img = $("img", figure);
    img.src = source.spectrogram;
    img.alt = `Spectrogram of ${source.label.toLowerCase()}`;
    talkers.append(figure);
  }
}

async function rerun(card, jobId, speakers, enhance) {
  const params = new URLSearchParams({ speakers });
  if (enhance) params.set("enhance", "1");
  const response = await fetch(`/api/jobs/${jobId}/rerun?${params}`, { method: "POST", headers: HEADERS });
  if (!response.ok) {
    showError(card, await errorText(response));
    return;
  }
  $(".result", card).hidden = true;
  $(".error", card).hidden = true;
  follow(card, await response.json());
}

// ------------------------------------------------------------------------------------------------
// Recording from the microphone: raw samples through Web Audio, sent as a 16-bit WAV file
// (MediaRecorder would give WebM/Opus, which the server's audio reader does not take).
// ------------------------------------------------------------------------------------------------
let recording = null;

function encodeWav(chunks, sampleRate) {
  const n = chunks.reduce((sum, c) => sum + c.length, 0);
  const buffer = new ArrayBuffer(44 + 2 * n);
  const view = new DataView(buffer);
  const text = (offset, s) => { for (let i = 0; i < s.length; i++) view.setUint8(offset + i, s.charCodeAt(i)); };
  text(0, "RIFF"); view.setUint32(4, 36 + 2 * n, true); text(8, "WAVE");
  text(12, "fmt "); view.setUint32(16, 16, true); view.setUint16(20, 1, true); view.setUint16(22, 1, true);
  view.setUint32(24, sampleRate, true); view.setUint32(28, 2 * sampleRate, true);
  view.setUint16(32, 2, true); view.setUint16(34, 16, true);
  text(36, "data"); view.setUint32(40, 2 * n, true);
  let offset = 44;
  for (const chunk of chunks) {
    for (let i = 0; i < chunk.length; i++, offset += 2) {
      const s = Math.max(-1, Math.min(1, chunk[i]));
      view.setInt16(offset, s < 0 ? s * 0x8000 : s * 0x7fff, true);
    }
  }
  return new Blob([buffer], { type: "audio/wav" });
}

async function startRecording() {
  const button = $("#record");
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia(
      { audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false } });
  } catch (e) {
    notice(`The microphone is not available (${e.name || e}): allow it for this page, or upload a file.`);
    return;
  }
  const context = new AudioContext();
  const source = context.createMediaStreamSource(stream);
  const processor = context.createScriptProcessor(4096, 1, 1);
  const chunks = [];
  processor.onaudioprocess = (e) => chunks.push(new Float32Array(e.inputBuffer.getChannelData(0)));
  source.connect(processor);
  processor.connect(context.destination);
  const started = Date.now();
  const timer = setInterval(() => {
    const seconds = (Date.now() - started) / 1000;
    $("#record-time").textContent = `recording ${Math.floor(seconds / 60)}:${String(Math.floor(seconds % 60)).padStart(2, "0")}`;
    if (INFO && seconds >= INFO.max_duration_s) stopRecording();
  }, 250);
  recording = { stream, context, source, processor, chunks, timer };
  button.classList.add("recording");
  button.textContent = "■ Stop and separate";
  notice("");
}

async function stopRecording() {
  if (!recording) return;
  const { stream, context, source, processor, chunks, timer } = recording;
  recording = null;
  clearInterval(timer);
  source.disconnect();
  processor.disconnect();
  for (const track of stream.getTracks()) track.stop();
  const rate = context.sampleRate;
  await context.close();
  const button = $("#record");
  button.classList.remove("recording");
  button.textContent = "● Record from the microphone";
  $("#record-time").textContent = "";
  if (!chunks.length) {
    notice("Nothing was recorded.");
    return;
  }
  const stamp = new Date().toISOString().slice(0, 19).replace(/[-:]/g, "").replace("T", "-");
  upload(new File([encodeWav(chunks, rate)], `recording-${stamp}.wav`, { type: "audio/wav" }));
}

// ------------------------------------------------------------------------------------------------
// Wiring
// ------------------------------------------------------------------------------------------------
function wire() {
  const input = $("#files");
  input.addEventListener("change", () => {
    uploadAll(Array.from(input.files));
    input.value = "";
  });
  const zone = $("#dropzone");
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    uploadAll(Array.from(e.dataTransfer.files));
  });
  const record = $("#record");
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    record.disabled = true;
    record.title = "The browser allows the microphone only on https or on this computer (http://127.0.0.1)";
  }
  record.addEventListener("click", () => (recording ? stopRecording() : startRecording()));
}

document.addEventListener("DOMContentLoaded", async () => {
  wire();
  try {
    await loadInfo();
    document.body.dataset.ready = "1";
  } catch (e) {
    notice(`Cannot reach the voxsep server (${e.message || e}).`);
  }
});
