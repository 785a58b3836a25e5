// deepdream-onnx serve: the page.  Plain JavaScript, no framework, no build step.
// It talks only to the server's /api (see deepdream_onnx/web): the model, layer
// thumbnails, concept names, and dreams (create, follow by Server-Sent Events, cancel).
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const FINAL = new Set(["done", "failed", "cancelled"]);

  const state = {
    model: null,
    blobs: new Map(),     // name -> {name, channels, stride, min_size}
    imageFile: null,      // the start image to upload (a File or Blob)
    imageUrl: null,       // an object URL showing it
    job: null,            // the dream in progress: {id, params, input, es, timer, finished}
    results: [],          // this session's finished dreams, newest last
    shown: null,          // the dream shown in the output pane
    galleryBuilt: false,
    conceptTimer: null,
    conceptQuery: null,
  };

  // ---- messages ----

  function showError(message) {
    const el = $("error");
    el.textContent = message;
    el.hidden = false;
    // On a narrow screen the message is far above the Start button.
    if (el.getBoundingClientRect().top < 0) el.scrollIntoView({ block: "nearest" });
  }

  function clearError() {
    const el = $("error");
    el.textContent = "";
    el.hidden = true;
  }

  function setStatus(text, stateName) {
    const el = $("status");
    el.textContent = text;
    if (stateName) el.dataset.state = stateName;
  }

  // The one-line message of a failed response: FastAPI's {"detail": "..."} (or its
  // validation list), else the HTTP status.
  async function failure(res) {
    let detail = null;
    try {
      const body = await res.json();
      detail = body && body.detail;
    } catch (e) {
      detail = null;
    }
    if (Array.isArray(detail)) {
      detail = detail.map((d) => (d && d.msg) || JSON.stringify(d)).join("; ");
    } else if (detail && typeof detail !== "string") {
      detail = JSON.stringify(detail);
    }
    return new Error(detail || `${res.status} ${res.statusText || "error"}`.trim());
  }

  async function api(url, options) {
    let res;
    try {
      res = await fetch(url, options);
    } catch (e) {
      throw new Error("the server does not answer (" + e.message + ")");
    }
    if (!res.ok) {
      const error = await failure(res);
      error.status = res.status;
      throw error;
    }
    return res;
  }

  // ---- the model ----

  function layerPath(name) {
    // Layer names contain '/': keep each '/' and encode the segments.
    return name.split("/").map(encodeURIComponent).join("/");
  }

  function thumbnailUrl(name) {
    return `/api/layers/${layerPath(name)}/thumbnail`;
  }

  async function loadModel() {
    const model = await (await api("/api/model")).json();
    state.model = model;
    $("model-name").textContent = model.name || "?";
    for (const b of model.blobs || []) state.blobs.set(b.name, b);

    const select = $("layer");
    select.textContent = "";
    const names = (model.spatial_blobs && model.spatial_blobs.length)
      ? model.spatial_blobs : (model.blobs || []).map((b) => b.name);
    for (const name of names) {
      const b = state.blobs.get(name);
      const opt = document.createElement("option");
      opt.value = name;
      opt.textContent = b && b.channels ? `${name} (${b.channels} ch)` : name;
      select.appendChild(opt);
    }
    if (model.default_end && names.includes(model.default_end)) select.value = model.default_end;
    layerChanged();

    const limits = model.limits || {};
    const setMax = (id, value) => { if (value) $(id).max = String(value); };
    setMax("iters", limits.max_iters);
    setMax("octaves", limits.max_octaves);
    setMax("frames", limits.max_frames);
    setMax("width", limits.max_side);
    setMax("height", limits.max_side);

    if (!model.classes || !model.classes.length) {
      // No class names: concepts are indices into the classifier's output only.
      $("concept").placeholder = "a class index";
    }
  }

  function layerChanged() {
    const name = $("layer").value;
    const b = state.blobs.get(name);
    const info = [];
    if (b) {
      if (b.channels) info.push(`${b.channels} channels`);
      if (b.stride) info.push(`stride ${b.stride}`);
      if (b.min_size) info.push(`input at least ${b.min_size[1]}×${b.min_size[0]} px`);
    }
    $("layer-info").textContent = info.join(" · ");
    $("channels-hint").textContent = b && b.channels
      ? `Channels of ${name}: 0 to ${b.channels - 1}; empty for all.` : "";
    // Each thumbnail is a small dream the server computes on first request:
    // fetch only the selected layer's, and the rest when the gallery opens.
    const thumb = $("layer-thumb");
    if (name) {
      thumb.hidden = false;
      thumb.alt = `A small dream at ${name}`;
      thumb.src = thumbnailUrl(name);
    } else {
      thumb.hidden = true;
    }
    for (const btn of $("layer-grid").querySelectorAll("button")) {
      btn.setAttribute("aria-pressed", String(btn.dataset.layer === name));
    }
  }

  function buildGallery() {
    if (state.galleryBuilt) return;
    state.galleryBuilt = true;
    const grid = $("layer-grid");
    for (const opt of $("layer").options) {
      const btn = document.createElement("button");
      btn.type = "button";
      btn.dataset.layer = opt.value;
      btn.setAttribute("aria-pressed", String(opt.value === $("layer").value));
      btn.title = opt.textContent;
      const img = document.createElement("img");
      img.loading = "lazy";
      img.alt = "";
      img.width = 96;
      img.height = 96;
      img.src = thumbnailUrl(opt.value);
      const label = document.createElement("span");
      label.textContent = opt.value;
      btn.append(img, label);
      btn.addEventListener("click", () => {
        $("layer").value = opt.value;
        layerChanged();
      });
      grid.appendChild(btn);
    }
  }

  // ---- the start image ----

  function startKind() {
    const checked = document.querySelector('input[name="start"]:checked');
    return checked ? checked.value : "image";
  }

  function startChanged() {
    const kind = startKind();
    $("image-row").hidden = kind !== "image";
    $("size-row").hidden = kind === "image";
    showInput();
  }

  function showInput() {
    const kind = startKind();
    const img = $("input-image");
    const placeholder = $("input-placeholder");
    if (kind === "image" && state.imageUrl) {
      img.src = state.imageUrl;
      img.hidden = false;
      placeholder.hidden = true;
      $("input-caption").textContent = `Input: ${state.imageFile.name || "image"}`;
    } else {
      img.hidden = true;
      img.removeAttribute("src");
      placeholder.hidden = false;
      placeholder.textContent = kind === "image" ? "No image yet"
        : `The built-in ${kind} (${$("width").value}×${$("height").value})`;
      $("input-caption").textContent = "Input";
    }
  }

  function setImage(file) {
    if (!file) return;
    const limits = (state.model && state.model.limits) || {};
    if (limits.max_upload_bytes && file.size > limits.max_upload_bytes) {
      showError(`${file.name || "The image"} is ${mb(file.size)}; the server takes up to ${mb(limits.max_upload_bytes)}.`);
      return;
    }
    if (file.type && !file.type.startsWith("image/")) {
      showError(`${file.name || "That file"} is not an image.`);
      return;
    }
    clearError();
    state.imageFile = file;
    state.imageUrl = URL.createObjectURL(file);
    $("drop-text").textContent = `${file.name || "image"} — drop or choose another`;
    $("start-image").checked = true;
    startChanged();
  }

  function mb(bytes) {
    return bytes >= 1 << 20 ? `${(bytes / (1 << 20)).toFixed(1)} MB` : `${Math.ceil(bytes / 1024)} KB`;
  }

  // ---- parameters ----

  function number(id, label, { integer = false, optional = false } = {}) {
    const raw = $(id).value.trim();
    if (raw === "") {
      if (optional) return null;
      throw new Error(`${label}: enter a number.`);
    }
    const value = Number(raw);
    if (!Number.isFinite(value) || (integer && !Number.isInteger(value))) {
      throw new Error(`${label}: ${raw} is not ${integer ? "a whole number" : "a number"}.`);
    }
    return value;
  }

  function channelList() {
    const raw = $("channels").value.trim();
    if (!raw) return null;
    const parts = raw.split(/[\s,]+/).filter(Boolean);
    const b = state.blobs.get($("layer").value);
    return parts.map((p) => {
      if (!/^\d+$/.test(p)) throw new Error(`Channels: ${p} is not a channel number.`);
      const c = Number(p);
      if (b && b.channels && c >= b.channels) {
        throw new Error(`Channels: ${$("layer").value} has channels 0 to ${b.channels - 1}, not ${c}.`);
      }
      return c;
    });
  }

  function conceptValue() {
    const raw = $("concept").value.trim();
    if (!raw) return null;
    return /^\d+$/.test(raw) ? Number(raw) : raw;
  }

  function readParams() {
    const start = startKind();
    const zoom = $("zoom").checked;
    return {
      start,
      size: start === "image" ? null
        : [number("width", "Width", { integer: true }), number("height", "Height", { integer: true })],
      end: $("layer").value,
      iters: number("iters", "Iterations", { integer: true }),
      octaves: number("octaves", "Octaves", { integer: true }),
      octave_scale: number("octave-scale", "Octave scale"),
      step_size: number("step-size", "Step size"),
      jitter: number("jitter", "Jitter", { integer: true }),
      seed: number("seed", "Seed", { integer: true, optional: true }),
      channels: channelList(),
      concept: conceptValue(),
      laplacian: number("laplacian", "Laplacian levels", { integer: true, optional: true }),
      mode: zoom ? "zoom" : "dream",
      frames: zoom ? number("frames", "Frames", { integer: true }) : 1,
      scale: zoom ? number("zoom-scale", "Zoom per frame") : null,
    };
  }

  // ---- dreams ----

  async function start() {
    clearError();
    if (state.job && !state.job.finished) return;
    let params;
    try {
      params = readParams();
      if (params.start === "image" && !state.imageFile) {
        throw new Error("Choose an image first, or start from the sky or noise.");
      }
    } catch (e) {
      showError(e.message);
      return;
    }
    const body = new FormData();
    body.append("params", JSON.stringify(params));
    if (params.start === "image") body.append("image", state.imageFile, state.imageFile.name || "image.png");
    const guide = $("guide-input").files[0];
    if (guide) body.append("guide", guide, guide.name);

    const input = params.start === "image"
      ? { url: state.imageUrl, name: state.imageFile.name || "image" }
      : { url: null, name: `the ${params.start} ${params.size[0]}×${params.size[1]}` };
    $("start").disabled = true;
    $("progress").value = 0;
    setStatus("Sending…", "sending");
    let created;
    try {
      created = await (await api("/api/dreams", { method: "POST", body })).json();
    } catch (e) {
      $("start").disabled = false;
      setStatus("Not started.", "idle");
      showError(e.message);
      return;
    }
    follow(created, params, input);
  }

  function follow(created, params, input) {
    const job = { id: created.id, params, input, es: null, timer: null, finished: false, previews: 0 };
    state.job = job;
    $("status").dataset.dream = job.id;
    $("cancel").disabled = false;
    $("start").disabled = true;
    $("dream-on").disabled = true;
    const progress = $("progress");
    progress.max = 1;
    progress.value = 0;
    showOutput(null);
    showInput();
    applyStatus(job, created);

    if (typeof EventSource === "function") {
      const es = new EventSource(`/api/dreams/${encodeURIComponent(job.id)}/events`);
      job.es = es;
      es.onmessage = (ev) => {
        let data;
        try {
          data = JSON.parse(ev.data);
        } catch (e) {
          return;
        }
        onEvent(job, data);
      };
      es.onerror = () => {
        // The stream ends after the final status; if it broke before, poll instead.
        es.close();
        job.es = null;
        if (!job.finished) poll(job);
      };
    } else {
      poll(job);
    }
  }

  function onEvent(job, data) {
    if (job.finished) return;
    switch (data.type) {
      case "progress":
        applyProgress(job, data.progress || data);
        break;
      case "preview":
        if (data.url) showPreview(job, data.url);
        break;
      case "status":
      default:
        applyStatus(job, data);
    }
  }

  function poll(job) {
    if (job.finished || job.timer) return;
    const tick = async () => {
      job.timer = null;
      if (job.finished) return;
      try {
        const s = await (await api(`/api/dreams/${encodeURIComponent(job.id)}`)).json();
        applyStatus(job, s);
        if (!job.finished && s.has_preview) {
          const v = s.progress ? s.progress.done : Date.now();
          showPreview(job, `/api/dreams/${encodeURIComponent(job.id)}/preview?v=${v}`);
        }
      } catch (e) {
        if (e.status === 404) {  // the server forgot it (restarted, or too many dreams since)
          finish(job, { status: "failed", message: e.message });
          return;
        }
        setStatus(`Lost touch with the server: ${e.message}; retrying…`);
      }
      if (!job.finished) job.timer = setTimeout(tick, 1000);
    };
    job.timer = setTimeout(tick, 300);
  }

  function applyStatus(job, s) {
    if (job.finished || !s) return;
    if (s.progress) applyProgress(job, s.progress);
    const status = s.status;
    if (status === "queued") {
      const ahead = s.position ? ` (${s.position} ahead)` : "";
      setStatus(`Queued${ahead}…`, "queued");
    } else if (status === "running") {
      if (!s.progress) setStatus("Running…", "running");
    } else if (FINAL.has(status)) {
      finish(job, s);
    }
  }

  function applyProgress(job, p) {
    if (job.finished || !p) return;
    const progress = $("progress");
    if (p.total) {
      progress.max = p.total;
      progress.value = Math.min(p.done || 0, p.total);
    }
    // octave and frame count from 1, step from 0 (the steps done in the octave).
    const parts = [];
    if (p.frames > 1) parts.push(`Frame ${p.frame || 1} of ${p.frames}`);
    if (p.octaves) parts.push(`${parts.length ? "octave" : "Octave"} ${p.octave || 1} of ${p.octaves}`);
    if (p.steps) parts.push(`step ${Math.min(p.step || 0, p.steps)} of ${p.steps}`);
    if (p.eta_s !== null && p.eta_s !== undefined && p.done < p.total) parts.push(eta(p.eta_s));
    setStatus(parts.length ? parts.join(" · ") : "Running…", "running");
    if (p.total) document.title = `${Math.floor((100 * (p.done || 0)) / p.total)}% · DeepDream`;
  }

  function eta(seconds) {
    const s = Math.max(0, Math.round(seconds));
    if (s < 1) return "almost done";
    if (s < 60) return `about ${s} s left`;
    const m = Math.floor(s / 60);
    return `about ${m} min ${s % 60} s left`;
  }

  function showPreview(job, url) {
    if (job.finished) return;
    job.previews += 1;
    const img = $("preview");
    img.src = url;
    img.hidden = false;
    $("output-placeholder").hidden = true;
    $("result-caption").textContent = "Dreaming…";
  }

  function finish(job, s) {
    job.finished = true;
    if (job.es) job.es.close();
    if (job.timer) clearTimeout(job.timer);
    job.es = null;
    job.timer = null;
    $("cancel").disabled = true;
    $("start").disabled = false;
    $("dream-on").disabled = false;
    document.title = "DeepDream";
    const progress = $("progress");
    if (s.status === "done") {
      progress.value = progress.max;
      setStatus("Done.", "done");
      const entry = {
        id: job.id,
        params: s.params || job.params,
        input: job.input,
        mode: s.mode || job.params.mode,
      };
      state.results.push(entry);
      addToStrip(entry);
      showOutput(entry);
    } else {
      // Keep the last preview, if any, to show how far it got.
      const word = s.status === "cancelled" ? "Cancelled" : "Failed";
      setStatus(`${word}.`, s.status);
      $("result-caption").textContent = job.previews ? `${word}: the last preview` : word;
      $("output-placeholder").textContent = `${word}.`;
      if (s.status !== "cancelled") showError(s.message || "The dream failed.");
    }
  }

  async function cancel() {
    const job = state.job;
    if (!job || job.finished) return;
    $("cancel").disabled = true;
    setStatus("Cancelling…", "cancelling");
    try {
      const res = await api(`/api/dreams/${encodeURIComponent(job.id)}`, { method: "DELETE" });
      let s = null;
      try {
        s = await res.json();
      } catch (e) {
        s = null;
      }
      if (s && s.status) applyStatus(job, s);
    } catch (e) {
      // Refused (e.g. it finished meanwhile): say so only if the dream is still going.
      let s = null;
      try {
        s = await (await api(`/api/dreams/${encodeURIComponent(job.id)}`)).json();
      } catch (e2) {
        s = null;
      }
      if (s) applyStatus(job, s);
      if (!job.finished) {
        showError(e.message);
        $("cancel").disabled = false;
      }
    }
    // The final status arrives on the event stream; make sure it is heard.
    if (!job.finished && !job.es) poll(job);
  }

  // ---- results ----

  function imageUrl(id) {
    return `/api/dreams/${encodeURIComponent(id)}/image`;
  }

  function fileStem(entry) {
    const layer = String((entry.params && entry.params.end) || "dream").replace(/[^A-Za-z0-9._-]+/g, "-");
    return `dream-${layer}-${entry.id}`;
  }

  // Show a finished dream (entry) beside its input, or clear the output pane (null).
  function showOutput(entry) {
    state.shown = entry;
    const preview = $("preview");
    const result = $("result");
    const animation = $("animation");
    const download = $("download");
    const gif = $("download-gif");
    preview.hidden = true;
    result.hidden = true;
    animation.hidden = true;
    download.hidden = true;
    gif.hidden = true;
    $("dream-on").hidden = true;
    $("output-placeholder").hidden = false;
    $("output-placeholder").textContent = state.job && !state.job.finished
      ? "The dream appears here as it grows" : "The dream appears here";
    $("result-caption").textContent = "Dream";
    for (const btn of $("strip").querySelectorAll("button")) {
      btn.setAttribute("aria-current", String(!!entry && btn.dataset.id === entry.id));
    }
    if (!entry) return;

    $("output-placeholder").hidden = true;
    const url = imageUrl(entry.id);
    if (entry.mode === "zoom") {
      animation.src = `/api/dreams/${encodeURIComponent(entry.id)}/animation`;
      animation.hidden = false;
      gif.href = animation.src;
      gif.download = `${fileStem(entry)}.gif`;
      gif.hidden = false;
    } else {
      result.src = url;
      result.hidden = false;
    }
    download.href = url;
    download.download = `${fileStem(entry)}.png`;
    download.hidden = false;
    $("dream-on").hidden = false;
    $("result-caption").textContent = describe(entry.params);

    // The input it started from.
    const img = $("input-image");
    if (entry.input && entry.input.url) {
      img.src = entry.input.url;
      img.hidden = false;
      $("input-placeholder").hidden = true;
    } else {
      img.hidden = true;
      $("input-placeholder").hidden = false;
      $("input-placeholder").textContent = entry.input ? `Started from ${entry.input.name}` : "";
    }
    $("input-caption").textContent = `Input: ${entry.input ? entry.input.name : "?"}`;
  }

  function describe(p) {
    if (!p) return "Dream";
    const bits = [p.end, `${plural(p.octaves, "octave")} × ${plural(p.iters, "step")}`];
    if (p.channels && p.channels.length) bits.push(`channels ${p.channels.join(", ")}`);
    if (p.concept !== null && p.concept !== undefined && p.concept !== "") bits.push(`concept ${p.concept}`);
    if (p.laplacian) bits.push(`Laplacian ${p.laplacian}`);
    if (p.seed !== null && p.seed !== undefined) bits.push(`seed ${p.seed}`);
    if (p.mode === "zoom") bits.push(`zoom, ${plural(p.frames, "frame")}${p.scale ? ` of ${p.scale}` : ""}`);
    return bits.filter(Boolean).join(" · ");
  }

  function plural(n, word) {
    return `${n} ${word}${n === 1 ? "" : "s"}`;
  }

  function addToStrip(entry) {
    const li = document.createElement("li");
    const btn = document.createElement("button");
    btn.type = "button";
    btn.dataset.id = entry.id;
    btn.title = describe(entry.params);
    const img = document.createElement("img");
    img.src = imageUrl(entry.id);
    img.alt = "";
    img.loading = "lazy";
    const label = document.createElement("span");
    label.textContent = (entry.params && entry.params.end) || entry.id;
    btn.setAttribute("aria-label", `Show dream ${state.results.length}: ${describe(entry.params)}`);
    btn.append(img, label);
    btn.addEventListener("click", () => showOutput(entry));
    li.appendChild(btn);
    $("strip").appendChild(li);
  }

  async function dreamOn() {
    const entry = state.shown;
    if (!entry || (state.job && !state.job.finished)) return;
    clearError();
    $("dream-on").disabled = true;
    try {
      const blob = await (await api(imageUrl(entry.id))).blob();
      const file = new File([blob], `${fileStem(entry)}.png`, { type: "image/png" });
      setImage(file);
    } catch (e) {
      showError(e.message);
      $("dream-on").disabled = false;
      return;
    }
    await start();
  }

  // ---- concepts ----

  function conceptInput() {
    clearTimeout(state.conceptTimer);
    const q = $("concept").value.trim();
    if (!q || /^\d+$/.test(q) || q === state.conceptQuery) return;
    state.conceptTimer = setTimeout(async () => {
      state.conceptQuery = q;
      try {
        const res = await api(`/api/concepts?q=${encodeURIComponent(q)}&limit=10`);
        const { matches } = await res.json();
        if ($("concept").value.trim() !== q) return;
        const list = $("concept-list");
        list.textContent = "";
        for (const m of matches || []) {
          const opt = document.createElement("option");
          opt.value = m.name;
          opt.label = `${m.name} (${m.index})`;
          list.appendChild(opt);
        }
      } catch (e) {
        // Completion is a convenience; the dream request reports a bad concept.
      }
    }, 200);
  }

  function zoomChanged() {
    const off = !$("zoom").checked;
    $("frames").disabled = off;
    $("zoom-scale").disabled = off;
  }

  // ---- wiring ----

  function wire() {
    $("form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      start();
    });
    $("cancel").addEventListener("click", cancel);
    $("dream-on").addEventListener("click", dreamOn);
    $("layer").addEventListener("change", layerChanged);
    $("layer-gallery").addEventListener("toggle", () => {
      if ($("layer-gallery").open) buildGallery();
    });
    for (const radio of document.querySelectorAll('input[name="start"]')) {
      radio.addEventListener("change", startChanged);
    }
    $("width").addEventListener("input", showInput);
    $("height").addEventListener("input", showInput);
    $("image-input").addEventListener("change", () => setImage($("image-input").files[0]));
    $("guide-input").addEventListener("change", () => {
      $("guide-clear").hidden = !$("guide-input").files.length;
    });
    $("guide-clear").addEventListener("click", () => {
      $("guide-input").value = "";
      $("guide-clear").hidden = true;
    });
    $("zoom").addEventListener("change", zoomChanged);
    $("concept").addEventListener("input", conceptInput);

    // Drop an image anywhere on the page.
    const drop = $("drop");
    const hasFiles = (ev) => ev.dataTransfer && Array.from(ev.dataTransfer.types || []).includes("Files");
    document.addEventListener("dragover", (ev) => {
      if (!hasFiles(ev)) return;
      ev.preventDefault();
      drop.classList.add("over");
    });
    document.addEventListener("dragleave", (ev) => {
      if (!ev.relatedTarget) drop.classList.remove("over");
    });
    document.addEventListener("drop", (ev) => {
      if (!hasFiles(ev)) return;
      ev.preventDefault();
      drop.classList.remove("over");
      const file = ev.dataTransfer.files[0];
      if (file) setImage(file);
    });
  }

  async function main() {
    wire();
    zoomChanged();
    startChanged();
    try {
      await loadModel();
      setStatus("Pick an image and a layer, then Start.", "idle");
    } catch (e) {
      showError(`Could not load the model: ${e.message}`);
      $("start").disabled = true;
    }
    document.body.dataset.ready = "true";
  }

  main();
})();
