// Server strings (file names in errors, transcripts, speakers) only ever become text, never parsed as HTML.
const $ = (id) => document.getElementById(id);
const element = (tag, properties = {}) => Object.assign(document.createElement(tag), properties);
let transcript = null, audioName = "audio";

function fmt(t) {
  const s = Math.max(0, t), m = Math.floor(s / 60);
  return `${String(Math.floor(m / 60)).padStart(2, "0")}:${String(m % 60).padStart(2, "0")}:${(s % 60).toFixed(2).padStart(5, "0")}`;
}
function status(text, kind = "", ...nodes) { $("status").className = kind; $("status").replaceChildren(text, ...nodes); }
function headers() { const k = $("key").value.trim(); return k ? { Authorization: `Bearer ${k}` } : {}; }

async function loadInfo() {
  try {
    const info = await (await fetch("info")).json();
    const parts = [info.name || info.model, info.version && `version ${info.version}`, info.alias && `@${info.alias}`, info.backend];
    $("model").textContent = "model: " + parts.filter(Boolean).join(" · ");
  } catch (e) { $("model").textContent = "model: unavailable"; }
  try {  // the models a request may name: the registry's aliases and versions, bundled models
    const models = await (await fetch("v1/models", { headers: headers() })).json();
    for (const m of models.data) $("model-choice").append(element("option", { value: m.id, textContent: m.id }));
  } catch (e) {}
}

function transcribe(blob, name) {
  audioName = (name || "audio").replace(/\.[^.]+$/, "");
  $("player").src = URL.createObjectURL(blob); $("player").hidden = false;
  const form = new FormData();
  form.append("file", blob, name || "recording.webm");
  form.append("response_format", "verbose_json");
  form.append("timestamp_granularities[]", "segment");
  if ($("words").checked) form.append("timestamp_granularities[]", "word");
  if ($("model-choice").value) form.append("model", $("model-choice").value);
  if ($("language").value) form.append("language", $("language").value);
  if ($("speakers").checked) form.append("diarize", "true");
  if ($("multilingual").checked) form.append("multilingual", "true");
  const endpoint = $("task").value === "translate" ? "v1/audio/translations" : "v1/audio/transcriptions";
  const xhr = new XMLHttpRequest();
  xhr.open("POST", endpoint);
  for (const [k, v] of Object.entries(headers())) xhr.setRequestHeader(k, v);
  xhr.upload.onprogress = (e) => e.lengthComputable && status("Uploading… ", element("progress", { max: e.total, value: e.loaded }));
  xhr.upload.onload = () => status("Transcribing… ", element("progress", { id: "busy" }));
  xhr.onerror = () => status("Could not reach the server. Is asrflow serve still running?", "error");
  xhr.onload = () => {
    let body = null;
    try { body = JSON.parse(xhr.responseText); } catch (e) {}
    if (xhr.status !== 200) {
      const message = body && body.error ? body.error.message : xhr.statusText;
      status(`Error ${xhr.status}: ${message}`, "error");
      return;
    }
    const version = xhr.getResponseHeader("x-asrflow-model-version");
    show(body, xhr.getResponseHeader("x-asrflow-model") + (version ? ` (version ${version})` : ""));
  };
  status("Uploading…");
  $("segments").replaceChildren(); $("downloads").style.display = "none"; $("who").style.display = "none";
  xhr.send(form);
}

function show(body, answeredBy) {
  transcript = {
    text: body.text, language: body.language, language_probability: null, duration: body.duration,
    segments: (body.segments || []).map((s) => ({ start: s.start, end: s.end, text: s.text.trim(),
      language: s.language || null, speaker: s.speaker || null,
      words: (body.words || []).filter((w) => w.start >= s.start && w.end <= s.end + 0.01)
        .map((w) => ({ start: w.start, end: w.end, word: w.word, probability: null })) })),
  };
  const speakers = [...new Set(transcript.segments.map((s) => s.speaker).filter(Boolean))];
  const languages = new Set(transcript.segments.map((s) => s.language).filter(Boolean));
  const list = $("segments");
  list.replaceChildren();
  transcript.segments.forEach((seg, i) => {
    const li = document.createElement("li");
    li.dataset.index = i;
    li.dataset.speaker = seg.speaker || "";
    const time = element("span", { className: "time", title: "play from here", textContent: `${fmt(seg.start)} → ${fmt(seg.end)}` });
    const text = element("span", { className: "text", contentEditable: "true", spellcheck: true, textContent: seg.text });
    li.append(time);
    if (seg.speaker) {  // a colour a speaker, spread round the colour wheel
      const badge = element("span", { className: "speaker", textContent: seg.speaker });
      badge.style.background = `hsl(${(speakers.indexOf(seg.speaker) * 137) % 360}, 60%, 40%)`;  // CSSOM: allowed by the CSP
      li.append(badge);
    }
    if (seg.language && languages.size > 1) {
      li.append(element("span", { className: "lang", textContent: seg.language }));
    }
    li.append(text);
    time.onclick = () => { $("player").currentTime = seg.start; $("player").play(); };
    text.oninput = (e) => {
      seg.text = e.target.textContent.trim();
      e.target.classList.add("edited");
      transcript.text = transcript.segments.map((s) => s.text).join(" ");
    };
    list.appendChild(li);
  });
  status(transcript.segments.length ? `Done: ${transcript.segments.length} segments, ${transcript.duration.toFixed(1)} s of audio (${body.language}). Click a time to listen; click text to correct it.` : "No speech found in this audio.");
  $("status").append(element("div", { id: "answered-by", textContent: `Answered by ${answeredBy}.` }));
  $("downloads").style.display = transcript.segments.length ? "flex" : "none";
  const filter = $("speaker-filter");
  filter.replaceChildren(element("option", { value: "", textContent: "everyone" }),
                         ...speakers.map((s) => element("option", { value: s, textContent: s })));
  $("who").style.display = speakers.length > 1 ? "inline" : "none";
}

$("speaker-filter").onchange = () => {
  const who = $("speaker-filter").value;
  document.querySelectorAll("#segments li").forEach((li) => { li.hidden = Boolean(who) && li.dataset.speaker !== who; });
};

$("player").ontimeupdate = () => {
  const t = $("player").currentTime;
  document.querySelectorAll("#segments li").forEach((li) => {
    const seg = transcript.segments[li.dataset.index];
    li.classList.toggle("current", t >= seg.start && t < seg.end);
  });
};

document.querySelectorAll("#downloads button").forEach((b) => b.onclick = async () => {
  const format = b.dataset.format;
  const response = await fetch(`render/${format}`, { method: "POST", headers: { "Content-Type": "application/json", ...headers() }, body: JSON.stringify(transcript) });
  if (!response.ok) { status(`Could not render ${format}: ${response.statusText}`, "error"); return; }
  const url = URL.createObjectURL(await response.blob());
  const a = element("a", { href: url, download: `${audioName}.${format}` });
  document.body.appendChild(a); a.click(); a.remove();
});

$("file").onchange = (e) => e.target.files[0] && transcribe(e.target.files[0], e.target.files[0].name);
const drop = $("drop");
drop.ondragover = (e) => { e.preventDefault(); drop.classList.add("over"); };
drop.ondragleave = () => drop.classList.remove("over");
drop.ondrop = (e) => { e.preventDefault(); drop.classList.remove("over"); const f = e.dataTransfer.files[0]; if (f) transcribe(f, f.name); };

let recorder = null;
$("record").onclick = async () => {
  if (recorder) { recorder.stop(); return; }
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    const chunks = [];
    recorder = new MediaRecorder(stream);
    recorder.ondataavailable = (e) => chunks.push(e.data);
    recorder.onstop = () => {
      stream.getTracks().forEach((t) => t.stop());
      recorder = null; $("record").textContent = "● Record from microphone";
      transcribe(new Blob(chunks, { type: "audio/webm" }), "recording.webm");
    };
    recorder.start(); $("record").textContent = "■ Stop recording";
  } catch (e) { status(`Microphone unavailable: ${e.message}`, "error"); }
};
// Live captions: the microphone as 24 kHz PCM16 over /v1/realtime (OpenAI's transcription session); words
// settled while a turn is spoken in grey, each turn's final text in black.
let live = null;
function caption(item) {
  let p = [...$("live").children].find((c) => c.dataset.item === item);  // the id from the server: no selector built of it
  if (!p) { p = element("p", { className: "partial" }); p.dataset.item = item; $("live").appendChild(p); }
  return p;
}
function stopCaptions() {
  if (!live) return;
  live.processor.disconnect(); live.context.close(); live.stream.getTracks().forEach((t) => t.stop());
  if (live.socket.readyState <= 1) live.socket.close();
  live = null; $("captions").textContent = "◉ Live captions";
}
$("captions").onclick = async () => {
  if (live) { stopCaptions(); return; }
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1 } });
    const context = new AudioContext({ sampleRate: 24000 });
    const source = context.createMediaStreamSource(stream), processor = context.createScriptProcessor(4096, 1, 1);
    const key = $("key").value.trim(), scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}${location.pathname.replace(/[^/]*$/, "")}v1/realtime?intent=transcription`,
                                 ["realtime", ...(key ? [`openai-insecure-api-key.${key}`] : [])]);
    live = { stream, context, processor, socket };
    $("live").style.display = "block"; $("live").replaceChildren(); $("captions").textContent = "■ Stop captions";
    socket.onopen = () => {
      socket.send(JSON.stringify({ type: "session.update", session: { type: "transcription", audio: { input: {
        format: { type: "audio/pcm", rate: 24000 }, transcription: { language: $("language").value || null },
        turn_detection: { type: "server_vad", threshold: 0.5, prefix_padding_ms: 300, silence_duration_ms: 500 } } } } }));
      source.connect(processor); processor.connect(context.destination);
      status("Listening… captions appear as you speak.");
    };
    processor.onaudioprocess = (e) => {
      if (socket.readyState !== 1) return;
      const samples = e.inputBuffer.getChannelData(0), pcm = new Int16Array(samples.length);
      for (let i = 0; i < samples.length; i++) pcm[i] = Math.max(-1, Math.min(1, samples[i])) * 32767;
      let binary = ""; new Uint8Array(pcm.buffer).forEach((b) => { binary += String.fromCharCode(b); });
      socket.send(JSON.stringify({ type: "input_audio_buffer.append", audio: btoa(binary) }));
    };
    socket.onmessage = (m) => {
      const event = JSON.parse(m.data);
      if (event.type === "conversation.item.input_audio_transcription.delta") caption(event.item_id).textContent += event.delta;
      else if (event.type === "conversation.item.input_audio_transcription.completed") {
        const p = caption(event.item_id); p.textContent = event.transcript; p.className = "final";
      } else if (event.type === "error") status(`Live captions: ${event.error.message}`, "error");
    };
    socket.onclose = (e) => { if (live && live.socket === socket) { stopCaptions(); if (e.code !== 1000) status(`Live captions stopped (${e.reason || e.code}).`, "error"); } };
  } catch (e) { stopCaptions(); status(`Microphone unavailable: ${e.message}`, "error"); }
};
loadInfo().finally(() => { document.body.dataset.ready = "true"; });  // the controls laid out: the model list filled
