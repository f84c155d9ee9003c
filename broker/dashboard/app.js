// The dexec dashboard: one page, four views (overview, jobs, a job,
// workers) chosen by the URL's #fragment, all drawn from the broker's JSON
// API (docs/HTTP_API.md). Every value from the broker is put in the page as
// text (textContent), never as HTML.
'use strict';

const $ = (id) => document.getElementById(id);
const VIEWS = ['login', 'overview', 'jobs', 'job', 'workers'];
let me = null;           // {name, role} once logged in
let timer = null;        // the current view's refresh
const history = [];      // overview samples for the chart: {t, queued, running, rate}
const HISTORY_SECONDS = 120;

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, options = {}) {
  const resp = await fetch(path, Object.assign({credentials: 'same-origin',
    headers: {'Accept': 'application/json'}}, options));
  let body = null;
  try { body = await resp.json(); } catch (e) { body = null; }
  if (!resp.ok) {
    const err = body && body.error;
    const msg = !err ? `HTTP ${resp.status}` : (typeof err === 'string' ? err : err.message || err.code);
    throw new ApiError(resp.status, msg);
  }
  return body;
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function row(cells) {
  const tr = document.createElement('tr');
  for (const c of cells) {
    const td = document.createElement('td');
    if (c instanceof Node) td.appendChild(c); else td.textContent = c === null || c === undefined ? '' : String(c);
    tr.appendChild(td);
  }
  return tr;
}

function stateBadge(state) { return el('span', state, 'state ' + state); }

function fmtTime(t) {
  if (t === null || t === undefined || t === 0) return '';
  const d = new Date(t);
  return isNaN(d) ? String(t) : d.toLocaleString();
}

function fmtSeconds(s) {
  if (s === null || s === undefined) return '-';
  if (s < 0.001) return (s * 1e6).toFixed(0) + ' µs';
  if (s < 1) return (s * 1e3).toFixed(1) + ' ms';
  if (s < 120) return s.toFixed(2) + ' s';
  return (s / 60).toFixed(1) + ' min';
}

function setStatus(msg) { $('status').textContent = msg || ''; }

function show(view) {
  for (const v of VIEWS) $(v).hidden = v !== view;
  $('nav').hidden = view === 'login';
  $('logout').hidden = view === 'login';
  const page = view === 'job' ? 'jobs' : view;
  for (const a of document.querySelectorAll('nav a')) a.classList.toggle('active', a.dataset.page === page);
}

function every(ms, fn) {
  if (timer) clearInterval(timer);
  timer = null;
  fn();
  if (ms) timer = setInterval(fn, ms);
}

function handleError(e) {
  if (e instanceof ApiError && e.status === 401) { me = null; route(); return; }
  setStatus(e.message);
}

// ---- login ----

async function login(ev) {
  ev.preventDefault();
  $('login-error').textContent = '';
  try {
    me = await api('/api/login', {method: 'POST', headers: {'Content-Type': 'application/json'},
      body: JSON.stringify({token: $('token').value.trim()})});
    $('token').value = '';
    if (location.hash === '' || location.hash === '#/login') location.hash = '#/';
    route();
  } catch (e) {
    $('login-error').textContent = e.message;
  }
}

async function logout() {
  try { await api('/api/logout', {method: 'POST'}); } catch (e) { /* the cookie is gone either way */ }
  me = null;
  route();
}

// ---- overview ----

async function refreshOverview() {
  try {
    const s = await api('/api/stats');
    setStatus('');
    $('s-queued').textContent = s.queued;
    $('s-running').textContent = s.running;
    $('s-succeeded').textContent = s.succeeded;
    $('s-failed').textContent = s.failed;
    $('s-cancelled').textContent = s.cancelled;
    $('s-rate').textContent = Number(s.finish_rate || 0).toFixed(1);
    $('s-p50').textContent = s.wait_p50_ms === null || s.wait_p50_ms === undefined ? '-' : fmtSeconds(s.wait_p50_ms / 1000);
    $('s-p99').textContent = s.wait_p99_ms === null || s.wait_p99_ms === undefined ? '-' : fmtSeconds(s.wait_p99_ms / 1000);
    $('s-workers').textContent = `${s.workers} / ${s.threads}`;
    $('s-submitted').textContent = s.submitted_total;
    const now = Date.now() / 1000;
    history.push({t: now, queued: Number(s.queued), running: Number(s.running), rate: Number(s.finish_rate || 0)});
    while (history.length && history[0].t < now - HISTORY_SECONDS) history.shift();
    drawChart(now);
  } catch (e) { handleError(e); }
}

function drawChart(now) {
  const c = $('chart');
  const g = c.getContext('2d');
  const w = c.width, h = c.height, pad = 30;
  g.clearRect(0, 0, w, h);
  g.strokeStyle = '#d9dee4';
  g.strokeRect(pad, 5, w - pad - 5, h - pad);
  const max = Math.max(1, ...history.map((p) => Math.max(p.queued, p.running, p.rate)));
  g.fillStyle = '#5d6b7a';
  g.font = '11px sans-serif';
  g.fillText(String(Math.round(max)), 2, 14);
  g.fillText('0', 2, h - pad + 4);
  g.fillText(`-${HISTORY_SECONDS} s`, pad, h - 10);
  g.fillText('now', w - 30, h - 10);
  const x = (t) => pad + (w - pad - 5) * (1 - (now - t) / HISTORY_SECONDS);
  const y = (v) => 5 + (h - pad - 5) * (1 - v / max);
  for (const [key, color] of [['queued', '#9a6700'], ['running', '#2364aa'], ['rate', '#1f7a3a']]) {
    g.strokeStyle = color;
    g.lineWidth = 2;
    g.beginPath();
    history.forEach((p, i) => { if (i === 0) g.moveTo(x(p.t), y(p[key])); else g.lineTo(x(p.t), y(p[key])); });
    g.stroke();
  }
}

// ---- jobs ----

function jobsQuery() {
  const q = new URLSearchParams(location.hash.split('?')[1] || '');
  return q;
}

async function refreshJobs() {
  const q = jobsQuery();
  $('f-state').value = q.get('state') || '';
  $('f-task').value = q.get('task') || '';
  $('f-limit').value = q.get('limit') || '50';
  const params = new URLSearchParams();
  for (const k of ['state', 'task', 'limit', 'before_id']) if (q.get(k)) params.set(k, q.get(k));
  if (!params.get('limit')) params.set('limit', '50');
  try {
    const r = await api('/api/jobs?' + params.toString());
    setStatus('');
    const body = $('jobs-rows');
    body.replaceChildren();
    for (const j of r.jobs) {
      const a = el('a', j.id);
      a.href = '#/jobs/' + j.id;
      const note = j.error ? `${j.error.kind}: ${j.error.message}` : (j.waiting_reason || '');
      const tr = row([a, j.task, stateBadge(j.state), j.attempts, j.worker, fmtTime(j.submitted_at_ms), note]);
      tr.dataset.jobId = j.id;
      body.appendChild(tr);
    }
    const empty = $('jobs-empty');
    empty.hidden = r.jobs.length > 0 && !r.scan_stopped;
    empty.textContent = r.scan_stopped
      ? 'The broker searched 100,000 jobs for this page; older ones are not searched yet: press Older.'
      : 'No jobs match.';
    const next = $('jobs-next');
    next.disabled = r.next_before_id === null || r.next_before_id === undefined;
    next.dataset.before = next.disabled ? '' : r.next_before_id;
    $('jobs-newest').disabled = !q.get('before_id');
  } catch (e) { handleError(e); }
}

function jobsHash(extra) {
  const q = new URLSearchParams();
  if ($('f-state').value) q.set('state', $('f-state').value);
  if ($('f-task').value.trim()) q.set('task', $('f-task').value.trim());
  if ($('f-limit').value !== '50') q.set('limit', $('f-limit').value);
  for (const [k, v] of Object.entries(extra || {})) q.set(k, v);
  const s = q.toString();
  return '#/jobs' + (s ? '?' + s : '');
}

// ---- one job ----

async function refreshJob(id) {
  try {
    const j = await api('/api/jobs/' + encodeURIComponent(id));
    setStatus('');
    $('j-id').textContent = j.id;
    $('j-state').textContent = j.state;
    $('j-state').className = 'state ' + j.state;
    const spec = j.spec || {};
    const fields = [
      ['Task', j.task], ['Owner', j.owner], ['Worker', j.worker], ['Attempts', `${j.attempts} of ${spec.max_attempts ?? '?'}`],
      ['Priority', spec.priority], ['Timeout', spec.timeout_ms ? fmtSeconds(spec.timeout_ms / 1000) : 'none'],
      ['Idempotency key', spec.idempotency_key], ['Payload', `${spec.payload_size ?? 0} bytes`],
      ['Result', `${j.result_size ?? 0} bytes`], ['Submitted', fmtTime(j.submitted_at_ms)],
      ['Started', fmtTime(j.started_at_ms)], ['Finished', fmtTime(j.finished_at_ms)], ['Waiting because', j.waiting_reason],
    ];
    const t = $('j-fields');
    t.replaceChildren();
    for (const [k, v] of fields) {
      if (v === undefined || v === null || v === '') continue;
      const tr = document.createElement('tr');
      tr.appendChild(el('th', k));
      tr.appendChild(el('td', v));
      t.appendChild(tr);
    }
    $('j-error').textContent = j.error ? `${j.error.kind}: ${j.error.message}` : 'none';
    const at = $('j-attempts');
    at.replaceChildren();
    for (const a of j.attempt_log || []) {
      at.appendChild(row([a.number, a.worker, fmtTime(a.started_at_ms), fmtTime(a.ended_at_ms), a.outcome || 'running']));
    }
    const pv = $('j-preview');
    pv.replaceChildren();
    const parts = [];
    if (j.exec) {
      parts.push(['stdout', j.exec.stdout], ['stderr', j.exec.stderr]);
      pv.appendChild(el('p', `exit code ${j.exec.exit_code}` + (j.exec.signal ? `, signal ${j.exec.signal}` : '') +
        (j.exec.timed_out ? ', timed out' : '')));
    } else if (j.result) {
      parts.push(['result', j.result]);
    }
    let truncated = false;
    for (const [k, v] of parts) {
      if (!v) continue;
      truncated = truncated || v.truncated;
      pv.appendChild(el('h3', `${k} (${v.bytes} bytes)`));
      pv.appendChild(el('pre', v.text, 'preview-' + k));
    }
    if (truncated) pv.appendChild(el('p', 'Only the first bytes are shown; `dexec result ' + j.id + '` prints all.'));
    if (parts.length === 0) {
      pv.appendChild(el('p', j.result_visible === false ? 'Results are hidden from this token.' : 'No output to show.'));
    }
    const live = j.state === 'queued' || j.state === 'running';
    const btn = $('j-cancel');
    btn.hidden = !(live && j.can_cancel && me && me.role !== 'read');
    btn.dataset.jobId = j.id;
    $('j-cancel-note').textContent = live && !j.can_cancel ? 'Your token may not cancel this job.' : '';
    if (!live && timer) { clearInterval(timer); timer = null; }
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) {
      $('j-id').textContent = id;
      setStatus(e.message);
      return;
    }
    handleError(e);
  }
}

async function cancelJob() {
  const btn = $('j-cancel');
  const id = btn.dataset.jobId;
  btn.disabled = true;
  try {
    const r = await api(`/api/jobs/${encodeURIComponent(id)}/cancel`, {method: 'POST'});
    $('j-cancel-note').textContent = r.cancelled ? 'Cancelled.' : `Not cancelled: the job is ${r.state}.`;
  } catch (e) {
    $('j-cancel-note').textContent = e.message;
  }
  btn.disabled = false;
  refreshJob(id);
}

// ---- workers ----

async function refreshWorkers() {
  try {
    const r = await api('/api/workers');
    setStatus('');
    const body = $('workers-rows');
    body.replaceChildren();
    for (const w of r.workers) {
      body.appendChild(row([w.name, w.host, w.pid, stateBadge(w.state), w.threads, w.busy, w.done,
        fmtSeconds(w.heartbeat_age_ms / 1000), (w.tasks || []).join(', ')]));
    }
    $('workers-empty').hidden = r.workers.length > 0;
  } catch (e) { handleError(e); }
}

// ---- routing ----

async function route() {
  if (!me) {
    try { me = await api('/api/whoami'); } catch (e) { me = null; }
  }
  if (!me) {
    every(0, () => {});
    show('login');
    $('who').textContent = '';
    return;
  }
  $('who').textContent = `${me.name || '(no name)'} · ${me.role}`;
  const hash = location.hash.replace(/^#/, '') || '/';
  const path = hash.split('?')[0];
  let m;
  if (path === '/' || path === '/overview') { show('overview'); every(1000, refreshOverview); }
  else if (path === '/jobs') { show('jobs'); every(3000, refreshJobs); }
  else if ((m = path.match(/^\/jobs\/(\d+)$/))) { show('job'); every(1000, () => refreshJob(m[1])); }
  else if (path === '/workers') { show('workers'); every(2000, refreshWorkers); }
  else { location.hash = '#/'; }
}

window.addEventListener('hashchange', route);
window.addEventListener('DOMContentLoaded', () => {
  $('login-form').addEventListener('submit', login);
  $('logout').addEventListener('click', logout);
  $('jobs-filter').addEventListener('submit', (ev) => { ev.preventDefault(); location.hash = jobsHash(); });
  $('jobs-next').addEventListener('click', () => { location.hash = jobsHash({before_id: $('jobs-next').dataset.before}); });
  $('jobs-newest').addEventListener('click', () => { location.hash = jobsHash(); });
  $('j-cancel').addEventListener('click', cancelJob);
  route();
});
