// kiwi-fhir demo page. No framework, no CDN: the page must work on an air-gapped ward PC.
// Note text is only ever inserted with textContent (never innerHTML): it is untrusted input.
'use strict';

const $ = (id) => document.getElementById(id);
const TYPES = ['problem', 'test', 'drug', 'treatment'];
let lastBundle = null;

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function showError(message) {
  const box = $('error');
  box.textContent = message;
  box.hidden = !message;
}

async function extract() {
  showError('');
  const content = $('note').value;
  if (!content.trim()) { showError('Paste or upload a note first.'); return; }
  $('busy').hidden = false;
  $('extract').disabled = true;
  const headers = { 'Content-Type': 'application/json' };
  const token = $('token').value || sessionStorage.getItem('kiwi-token');
  if (token) headers.Authorization = 'Bearer ' + token;
  try {
    const resp = await fetch('/api/extract', {
      method: 'POST', headers, body: JSON.stringify({ content, kind: $('kind').value }),
    });
    let data;
    try { data = await resp.json(); } catch (e) { data = { error: 'HTTP ' + resp.status }; }
    if (resp.status === 401) { $('token-box').hidden = false; }
    if (!resp.ok) { showError(readable(resp.status, data)); return; }
    if (token) sessionStorage.setItem('kiwi-token', token);
    render(data);
  } catch (e) {
    showError('The service did not answer (' + e.message + '). Is kiwi-fhir serve running?');
  } finally {
    $('busy').hidden = true;
    $('extract').disabled = false;
  }
}

function readable(status, data) {
  const what = { 400: 'The input could not be read', 401: 'Authentication needed (enter the bearer token)',
    413: 'The note is too large', 429: 'The service is busy; try again shortly',
    503: 'The service is unavailable', 504: 'The extraction took too long' }[status] || 'Error ' + status;
  return what + (data && data.error ? ': ' + data.error : '');
}

function render(data) {
  $('output-pane').hidden = false;
  const by = $('answered-by');
  by.hidden = false;
  by.textContent = `model ${data.model || '?'} · backend ${data.backend || '?'} · ${data.latency_ms} ms` +
    (data.duplicate ? ' (stored result)' : '');
  const legend = $('legend');
  legend.replaceChildren(...TYPES.map((t) => el('span', { class: 'seg ent ' + t }, t)),
    el('span', { class: 'mod' }, 'modifier'));
  const docs = $('documents');
  docs.replaceChildren();
  const tbody = $('entities').querySelector('tbody');
  tbody.replaceChildren();
  data.documents.forEach((doc, i) => {
    docs.appendChild(renderDoc(doc, i));
    for (const row of tableRows(doc, i)) tbody.appendChild(row);
  });
  lastBundle = data.bundle;
  $('bundle').textContent = JSON.stringify(data.bundle, null, 2);
  $('bundle-count').textContent = `(${(data.bundle.entry || []).length} entries)`;
}

// Split the text at every mention boundary; each segment knows every mention covering it,
// so nested / overlapping spans (a bodyloc inside a problem) render without losing either.
function renderDoc(doc, di) {
  const box = el('div', { class: 'doc', 'data-doc': String(di) });
  box.appendChild(el('h3', {}, doc.id));
  const mentions = [
    ...doc.entities.map((m) => ({ ...m, kind: 'ent' })),
    ...doc.modifiers.map((m) => ({ ...m, kind: 'mod' })),
  ];
  const linked = links(doc);
  const cuts = new Set([0, doc.text.length]);
  for (const m of mentions) { cuts.add(m.start); cuts.add(m.end); }
  const points = [...cuts].sort((a, b) => a - b);
  for (let k = 0; k + 1 < points.length; k++) {
    const [a, b] = [points[k], points[k + 1]];
    const covering = mentions.filter((m) => m.start <= a && m.end >= b);
    const piece = doc.text.slice(a, b);
    if (!covering.length) { box.appendChild(document.createTextNode(piece)); continue; }
    const ent = covering.find((m) => m.kind === 'ent');
    const mods = covering.filter((m) => m.kind === 'mod');
    const cls = ['seg'];
    if (ent) cls.push('ent', ent.type);
    if (mods.length) cls.push('mod');
    if (mods.length && mods.every((m) => !(linked.get(m.id) || []).length)) cls.push('linked-none');
    const span = el('span', {
      class: cls.join(' '),
      'data-ids': covering.map((m) => `${di}:${m.id}`).join(' '),
      title: covering.map((m) => `${m.type}${m.confidence != null ? ' ' + m.confidence.toFixed(2) : ''}`).join(' · '),
    }, piece);
    span.addEventListener('mouseenter', () => highlight(di, covering, linked));
    span.addEventListener('click', () => highlight(di, covering, linked));
    box.appendChild(span);
  }
  box.addEventListener('mouseleave', () => clearHighlight());
  return box;
}

function links(doc) {
  const map = new Map();
  const add = (a, b) => { if (!map.has(a)) map.set(a, []); map.get(a).push(b); };
  for (const r of doc.relations) { add(r.entity, r.modifier); add(r.modifier, r.entity); }
  return map;
}

function clearHighlight() {
  for (const n of document.querySelectorAll('.hl, .hl-mod')) n.classList.remove('hl', 'hl-mod');
}

// An entity lights up with its modifiers; a modifier with its entity (and that entity's others).
function highlight(di, covering, linked) {
  clearHighlight();
  const ents = new Set();
  for (const m of covering) {
    if (m.kind === 'ent') ents.add(m.id);
    else for (const e of linked.get(m.id) || []) ents.add(e);
  }
  const mods = new Set(covering.filter((m) => m.kind === 'mod').map((m) => m.id));
  for (const e of ents) for (const m of linked.get(e) || []) mods.add(m);
  for (const span of document.querySelectorAll(`.doc[data-doc="${di}"] .seg`)) {
    const ids = span.dataset.ids.split(' ').map((x) => x.split(':')[1]);
    if (ids.some((x) => ents.has(x))) span.classList.add('hl');
    if (ids.some((x) => mods.has(x))) span.classList.add('hl-mod');
  }
  for (const tr of document.querySelectorAll(`#entities tr[data-doc="${di}"]`)) {
    if (ents.has(tr.dataset.id)) tr.classList.add('hl');
  }
}

// Code system URIs by a distinctive part (the page names no URL of its own).
const SYSTEMS = [
  ['/sid/icd-10-cm', 'ICD-10-CM'],
  ['fdasis.nlm.nih.gov', 'UNII'],
  ['drugbank', 'DrugBank'],
  ['loinc.org', 'LOINC'],
];

function systemLabel(uri) {
  const hit = SYSTEMS.find(([part]) => uri.includes(part));
  return hit ? hit[1] : uri;
}

function tableRows(doc, di) {
  const modById = new Map(doc.modifiers.map((m) => [m.id, m]));
  const linked = links(doc);
  return doc.entities.map((e) => {
    const tr = el('tr', { 'data-doc': String(di), 'data-id': e.id });
    const type = el('td');
    type.appendChild(el('span', { class: 'type-dot seg ' + e.type }));
    type.appendChild(document.createTextNode(e.type));
    tr.appendChild(type);
    tr.appendChild(el('td', {}, e.text));
    const codes = el('td', { class: 'codes' });
    for (const c of e.codes || []) {
      const how = `${c.display} · ${c.method} ${c.score.toFixed(2)} · ${c.version}`;
      codes.appendChild(el('span', { class: 'chip code', title: how }, `${systemLabel(c.system)} ${c.code}`));
    }
    tr.appendChild(codes);
    tr.appendChild(el('td', {}, `${e.start}–${e.end}`));
    tr.appendChild(el('td', {}, e.confidence != null ? e.confidence.toFixed(3) : ''));
    const mods = el('td');
    for (const id of linked.get(e.id) || []) {
      const m = modById.get(id);
      if (!m) continue;
      const conf = m.confidence != null ? ` ${m.confidence.toFixed(2)}` : '';
      mods.appendChild(el('span', { class: 'chip', title: `${m.start}–${m.end}${conf}` }, `${m.type}: ${m.text}`));
    }
    tr.appendChild(mods);
    tr.addEventListener('mouseenter', () => highlight(di, [{ ...e, kind: 'ent' }], linked));
    return tr;
  });
}

async function loadSample() {
  const resp = await fetch('/demo/assets/sample.txt');
  $('note').value = await resp.text();
  $('kind').value = 'auto';
}

function upload(ev) {
  const file = ev.target.files[0];
  if (!file) return;
  const reader = new FileReader();
  reader.onload = () => { $('note').value = String(reader.result); };
  reader.onerror = () => showError('Could not read the file.');
  reader.readAsText(file);
}

async function copyBundle() {
  const text = $('bundle').textContent;
  try { await navigator.clipboard.writeText(text); } catch (e) {
    const range = document.createRange(); range.selectNodeContents($('bundle'));
    const sel = window.getSelection(); sel.removeAllRanges(); sel.addRange(range);
    document.execCommand('copy');
  }
  $('copied').hidden = false;
  setTimeout(() => { $('copied').hidden = true; }, 1500);
}

function downloadBundle() {
  if (!lastBundle) return;
  const blob = new Blob([JSON.stringify(lastBundle, null, 2)], { type: 'application/fhir+json' });
  const a = el('a', { href: URL.createObjectURL(blob), download: 'kiwi-fhir-bundle.json' });
  document.body.appendChild(a); a.click(); a.remove();
}

$('extract').addEventListener('click', extract);
$('sample').addEventListener('click', loadSample);
$('file').addEventListener('change', upload);
$('copy').addEventListener('click', copyBundle);
$('download').addEventListener('click', downloadBundle);
