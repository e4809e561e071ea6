// The serving page (served by serve.py at "/"): upload or drop an image, send it to POST /semantic-segmentation
// with visualize=true, and show the original beside the server's overlay, a legend of the classes present in the
// label map (names and colours from GET /metadata) with their share of the pixels, and the round-trip latency.
// Plain JS, no dependencies, so the page works offline.
'use strict';

(function () {
  const el = (id) => document.getElementById(id);
  const fileInput = el('file-input');
  const dropZone = el('drop-zone');
  const original = el('original');
  const overlay = el('overlay');
  const legend = el('legend');
  const latency = el('latency');
  const modelInfo = el('model-info');
  const errorBox = el('error');

  const classes = new Map();  // class id -> {name, color: [r, g, b]}, from /metadata
  let latest = 0;              // number of the latest upload: answers to older ones are dropped
  let originalUrl = null;

  function setState(state) {
    // data-state on <body> (idle, busy, done, error) lets tests and scripts wait for the page
    document.body.dataset.state = state;
  }

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = false;
    setState('error');
  }

  function clearError() {
    errorBox.textContent = '';
    errorBox.hidden = true;
  }

  // The server's one-line message: PaddleX's envelope gives errorMsg, FastAPI's own errors give detail.
  function messageOf(response, body) {
    if (body && typeof body.errorMsg === 'string' && body.errorMsg) return body.errorMsg;
    if (body && body.detail !== undefined) {
      return typeof body.detail === 'string' ? body.detail : JSON.stringify(body.detail);
    }
    return `${response.status} ${response.statusText}`.trim();
  }

  async function getJson(response) {
    try {
      return await response.json();
    } catch (err) {
      return null;
    }
  }

  const metadataReady = (async function loadMetadata() {
    let response;
    let body;
    try {
      response = await fetch('/metadata');
      body = await getJson(response);
    } catch (err) {
      modelInfo.textContent = 'Model description unavailable.';
      showError(`GET /metadata failed: ${err.message}`);
      return;
    }
    if (!response.ok || !body) {
      modelInfo.textContent = 'Model description unavailable.';
      showError(`GET /metadata failed: ${messageOf(response, body)}`);
      return;
    }
    for (const c of body.classes || []) classes.set(c.id, c);
    const shape = (body.inputShape || []).map((d) => (d === null ? 'any' : d)).join(', ');
    const parts = [`Model: ${body.modelName}`, `backend: ${body.backend}`, `${classes.size} classes`];
    if (shape) parts.push(`input [N, C, H, W] = [${shape}]`);
    if (body.maxBatchSize) parts.push(`batches of up to ${body.maxBatchSize}`);
    modelInfo.textContent = parts.join(' · ');
  })();

  function readBase64(file) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => {
        const url = String(reader.result);
        resolve(url.slice(url.indexOf(',') + 1));  // drop "data:<type>;base64,"
      };
      reader.onerror = () => reject(reader.error || new Error('could not read the file'));
      reader.readAsDataURL(file);
    });
  }

  function loaded(img, src) {
    return new Promise((resolve, reject) => {
      img.onload = () => resolve();
      img.onerror = () => reject(new Error('the browser could not decode the overlay'));
      img.src = src;
    });
  }

  // One legend entry per class present, largest share first (as infer.py prints them).
  function renderLegend(labelMap) {
    const counts = new Map();
    for (const id of labelMap) counts.set(id, (counts.get(id) || 0) + 1);
    const total = Math.max(labelMap.length, 1);
    const ids = [...counts.keys()].sort((a, b) => counts.get(b) - counts.get(a) || a - b);
    legend.replaceChildren(...ids.map((id) => {
      const info = classes.get(id);
      const name = info ? info.name : `class ${id}`;
      const item = document.createElement('li');
      item.dataset.classId = String(id);
      const swatch = document.createElement('span');
      swatch.className = 'swatch';
      swatch.setAttribute('aria-hidden', 'true');
      if (info && Array.isArray(info.color)) swatch.style.background = `rgb(${info.color.join(', ')})`;
      const label = document.createElement('span');
      label.className = 'name';
      label.textContent = name;
      const share = document.createElement('span');
      share.className = 'share';
      const percent = (100 * counts.get(id)) / total;
      share.textContent = percent < 0.05 ? '<0.1%' : `${percent.toFixed(1)}%`;  // present, if only a few pixels
      item.append(swatch, label, share);
      return item;
    }));
  }

  async function segment(file) {
    const mine = ++latest;
    setState('busy');
    clearError();
    overlay.hidden = true;
    overlay.removeAttribute('src');
    legend.replaceChildren();
    latency.textContent = 'Segmenting…';

    if (originalUrl) URL.revokeObjectURL(originalUrl);
    originalUrl = URL.createObjectURL(file);
    original.hidden = true;
    original.onload = () => { original.hidden = false; };
    original.onerror = () => { original.hidden = true; };  // not an image the browser shows: the server says why
    original.alt = `The uploaded image, ${file.name}`;
    original.src = originalUrl;

    let image;
    try {
      image = await readBase64(file);
    } catch (err) {
      if (mine === latest) { latency.textContent = ''; showError(`Could not read ${file.name}: ${err.message}`); }
      return;
    }

    const started = performance.now();
    let response;
    let body;
    try {
      response = await fetch('/semantic-segmentation', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ image, visualize: true }),
      });
      body = await getJson(response);
    } catch (err) {
      if (mine === latest) { latency.textContent = ''; showError(`Could not reach the server: ${err.message}`); }
      return;
    }
    const elapsed = performance.now() - started;
    if (mine !== latest) return;

    if (!response.ok || !body || body.errorCode !== 0 || !body.result) {
      latency.textContent = '';
      showError(`Segmentation failed (HTTP ${response.status}): ${messageOf(response, body)}`);
      return;
    }
    latency.textContent = `Round trip: ${Math.round(elapsed)} ms`;
    const result = body.result;
    await metadataReady;
    if (mine !== latest) return;
    renderLegend(result.labelMap || []);
    if (result.image) {
      try {
        await loaded(overlay, `data:image/jpeg;base64,${result.image}`);
      } catch (err) {
        if (mine === latest) showError(err.message);
        return;
      }
      if (mine !== latest) return;
      overlay.hidden = false;
    }
    setState('done');
  }

  function take(files) {
    if (!files || files.length === 0) {
      showError('No file was dropped: drop an image file.');
      return;
    }
    segment(files[0]);
  }

  fileInput.addEventListener('change', () => {
    if (fileInput.files.length) take(fileInput.files);
  });

  for (const type of ['dragenter', 'dragover']) {
    dropZone.addEventListener(type, (event) => {
      event.preventDefault();
      dropZone.classList.add('dragging');
    });
  }
  dropZone.addEventListener('dragleave', () => dropZone.classList.remove('dragging'));
  dropZone.addEventListener('drop', (event) => {
    event.preventDefault();
    dropZone.classList.remove('dragging');
    take(event.dataTransfer && event.dataTransfer.files);
  });
  // a file dropped beside the zone must not make the browser navigate away from the page
  for (const type of ['dragover', 'drop']) window.addEventListener(type, (event) => event.preventDefault());

  setState('idle');
})();
