// Corral's web UI: a few pages over the API, as the signed-in user.
// Everything shown is read through the API (lists, watches, logs), so the
// server's authorization decides what each user sees. Lists are read a page
// at a time and kept live by watches; nothing reloads the page.
import { h, render } from './vendor/preact.module.js';
import { useEffect, useRef, useState } from './vendor/hooks.module.js';
import htm from './vendor/htm.module.js';

const html = htm.bind(h);
const CORRAL = '/apis/corral.dev/v1alpha1';
const PAGE = 100;

// ---- the session: a bearer token, or none (the browser's certificate) ----

const session = {
  token: sessionStorage.getItem('corral.token') || '',
  ns: sessionStorage.getItem('corral.ns') || '',
  user: null,
};

function headers(extra) {
  const h = { Accept: 'application/json', ...extra };
  if (session.token) h.Authorization = `Bearer ${session.token}`;
  return h;
}

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function failure(r) {
  let message = `${r.status} ${r.statusText}`;
  try { const s = await r.json(); if (s.message) message = s.message; } catch (_) { /* not a Status */ }
  if (r.status === 401) signOut();
  return new ApiError(r.status, message);
}

async function api(path, opts = {}) {
  const r = await fetch(path, { ...opts, headers: headers(opts.headers) });
  if (!r.ok) throw await failure(r);
  return r.json();
}

// Reads a streamed response a line (or a chunk) at a time until `signal` aborts.
async function stream(path, signal, onText) {
  const r = await fetch(path, { headers: headers(), signal });
  if (!r.ok) throw await failure(r);
  const reader = r.body.getReader();
  const text = new TextDecoder();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    onText(text.decode(value, { stream: true }));
  }
}

// Follows a watch of `path` (a collection, with its query) from `rv`,
// giving each event to `onEvent` until `signal` aborts or the stream ends.
async function watch(path, rv, signal, onEvent) {
  const sep = path.includes('?') ? '&' : '?';
  let buf = '';
  await stream(`${path}${sep}watch=1&allowWatchBookmarks=true&resourceVersion=${rv}`, signal, (text) => {
    buf += text;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i).trim();
      buf = buf.slice(i + 1);
      if (line) onEvent(JSON.parse(line));
    }
  });
}

async function whoami() {
  const review = await api('/apis/authentication.k8s.io/v1/selfsubjectreviews', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ apiVersion: 'authentication.k8s.io/v1', kind: 'SelfSubjectReview' }),
  });
  return review.status.userInfo.username;
}

function signOut() {
  session.token = '';
  session.user = null;
  sessionStorage.removeItem('corral.token');
  go('#/signin');
}

// ---- small helpers ----

const key = (o) => `${o.metadata.namespace || ''}/${o.metadata.name}`;
const scoped = (plural, ns) => (ns ? `${CORRAL}/namespaces/${ns}/${plural}` : `${CORRAL}/${plural}`);
const phaseOf = (t) => (t.status && t.status.phase) || 'PENDING';
const go = (hash) => { if (location.hash !== hash) location.hash = hash; else window.dispatchEvent(new HashChangeEvent('hashchange')); };

function age(ts) {
  if (!ts) return '';
  const s = Math.max(0, (Date.now() - Date.parse(ts)) / 1000);
  if (s < 90) return `${Math.round(s)}s`;
  if (s < 5400) return `${Math.round(s / 60)}m`;
  if (s < 172800) return `${Math.round(s / 3600)}h`;
  return `${Math.round(s / 86400)}d`;
}

// Quantities as the API writes them ("500m", "2Gi", 4) in base units.
const SUFFIX = { m: 1e-3, k: 1e3, M: 1e6, G: 1e9, T: 1e12, Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3, Ti: 1024 ** 4 };
function quantity(q) {
  if (q === undefined || q === null) return 0;
  if (typeof q === 'number') return q;
  const m = /^([0-9.]+)([a-zA-Z]*)$/.exec(String(q));
  return m ? parseFloat(m[1]) * (SUFFIX[m[2]] || 1) : 0;
}

function amount(resource, v) {
  if (resource === 'memory' || resource === 'disk') {
    if (v >= 1024 ** 3) return `${(v / 1024 ** 3).toFixed(1)}Gi`;
    return `${Math.round(v / 1024 ** 2)}Mi`;
  }
  return Number.isInteger(v) ? `${v}` : v.toFixed(2);
}

const pct = (part, whole) => (whole > 0 ? Math.min(100, (100 * part) / whole) : 0);

function Bar({ alloc, used, whole, title }) {
  return html`<span class="bar" title=${title}>
    <span class="alloc" style=${`width:${pct(alloc, whole)}%`}></span>
    <span class="used" style=${`width:${pct(used, whole)}%`}></span>
  </span>`;
}

const Phase = ({ p }) => html`<span class="phase ${p}">${p}</span>`;

// ---- live lists: a page at a time, kept current by a watch ----

function useLive(path, { limit = PAGE, query = '' } = {}) {
  const [state, setState] = useState({ items: new Map(), more: null, error: null, loaded: false });
  const rv = useRef('');
  const nextPage = useRef(null);
  useEffect(() => {
    const abort = new AbortController();
    let items = new Map();
    let more = null;
    const publish = () => setState({ items: new Map(items), more, error: null, loaded: true });
    const list = async (cont) => {
      const sep = query ? `&${query}` : '';
      const l = await api(`${path}?limit=${limit}${sep}${cont ? `&continue=${encodeURIComponent(cont)}` : ''}`, { signal: abort.signal });
      for (const o of l.items) items.set(key(o), o);
      more = l.metadata.continue || null;
      rv.current = l.metadata.resourceVersion;
      publish();
    };
    const follow = async () => {
      for (;;) {
        try {
          await watch(query ? `${path}?${query}` : path, rv.current, abort.signal, (ev) => {
            if (ev.type === 'ERROR') throw new ApiError(ev.object.code || 500, ev.object.message);
            if (ev.object && ev.object.metadata) rv.current = ev.object.metadata.resourceVersion || rv.current;
            if (ev.type === 'BOOKMARK') return;
            const k = key(ev.object);
            if (ev.type === 'DELETED') items.delete(k);
            // A new object joins the list only when every page is shown.
            else if (items.has(k) || !more) items.set(k, ev.object);
            publish();
          });
        } catch (e) {
          if (abort.signal.aborted) return;
          if (e.status === 410) { items = new Map(); await list(null); continue; }
          if (e.status === 401 || e.status === 403) { setState((s) => ({ ...s, error: e.message })); return; }
        }
        await new Promise((r) => setTimeout(r, 1000));
      }
    };
    list(null).then(follow).catch((e) => { if (!abort.signal.aborted) setState((s) => ({ ...s, error: e.message, loaded: true })); });
    nextPage.current = () => list(more).catch((e) => setState((s) => ({ ...s, error: e.message })));
    return () => abort.abort();
  }, [path, query]);
  return [state, () => nextPage.current && nextPage.current()];
}

function More({ state, next }) {
  if (state.error) return html`<p class="error">${state.error}</p>`;
  if (!state.loaded) return html`<p class="muted">Loading…</p>`;
  return state.more ? html`<p><button onClick=${next}>More</button></p>` : null;
}

// ---- charts ----

function Chart({ title, times, series, unit }) {
  const el = useRef(null);
  const plot = useRef(null);
  useEffect(() => {
    if (!el.current || !window.uPlot) return undefined;
    const opts = {
      width: Math.max(320, el.current.clientWidth - 10),
      height: 200,
      series: [{}, ...series.map((s, i) => ({ label: s.label, stroke: s.color || ['#2f6fdf', '#2e9d5b', '#d08a11', '#c9423a', '#7a4fd1'][i % 5], width: 2 }))],
      axes: [{}, { size: 70, values: (_, ticks) => ticks.map((v) => amount(unit, v)) }],
    };
    const data = [times, ...series.map((s) => s.values)];
    plot.current = new window.uPlot(opts, data, el.current);
    return () => plot.current.destroy();
  }, [title, series.length]);
  useEffect(() => {
    if (plot.current) plot.current.setData([times, ...series.map((s) => s.values)]);
  });
  return html`<div class="chart"><strong>${title}</strong><div ref=${el}></div></div>`;
}

function useHistory() {
  const [h, setH] = useState(null);
  useEffect(() => {
    let live = true;
    const load = () => api('/ui/api/history').then((x) => live && setH(x)).catch(() => {});
    load();
    const t = setInterval(load, 10000);
    return () => { live = false; clearInterval(t); };
  }, []);
  return h;
}

// ---- pages ----

function Overview() {
  const history = useHistory();
  const [roles] = useLive(`${CORRAL}/roles`);
  const [quotas] = useLive(`${CORRAL}/quotas`);
  const samples = (history && history.samples) || [];
  const last = samples[samples.length - 1];
  const times = samples.map((s) => s.time);
  const line = (field, res) => samples.map((s) => (s[field] && s[field][res]) || 0);
  const limits = {};
  for (const q of quotas.items.values()) limits[q.spec.role] = q.spec;
  const roleNames = [...new Set(samples.flatMap((s) => Object.keys(s.roles || {})))].sort();
  const cards = last && Object.keys(last.allocatable).length ? ['cpus', 'memory'].map((r) => {
    const whole = last.allocatable[r] || 0;
    const alloc = (last.allocated || {})[r] || 0;
    const used = (last.used || {})[r] || 0;
    return html`<div class="card" data-resource=${r}><div class="muted">${r}</div>
      <div class="big">${amount(r, alloc)} / ${amount(r, whole)}</div>
      <${Bar} alloc=${alloc} used=${used} whole=${whole} title="allocated (light) and used (dark)"/>
      <div class="muted">allocated ${Math.round(pct(alloc, whole))}% · used ${amount(r, used)}</div></div>`;
  }) : null;
  return html`<h1>Cluster</h1>
    ${last && last.nodes ? html`<p class="muted">${last.ready} of ${last.nodes} nodes Ready · ${Object.entries(last.tasks || {}).map(([p, n]) => `${n} ${p}`).join(' · ')}</p>` : null}
    <div class="cards">${cards || html`<p class="muted">No cluster figures for you yet (they need the right to list nodes; one is taken every ${history ? history.intervalSeconds : 30}s).</p>`}</div>
    ${samples.length > 1 && last.allocatable.cpus !== undefined ? html`
      <h2>The last hour</h2>
      <${Chart} title="cpus" unit="cpus" times=${times} series=${[
        { label: 'allocatable', values: line('allocatable', 'cpus') },
        { label: 'allocated', values: line('allocated', 'cpus') },
        { label: 'used', values: line('used', 'cpus') }]}/>
      <${Chart} title="memory" unit="memory" times=${times} series=${[
        { label: 'allocatable', values: line('allocatable', 'memory') },
        { label: 'allocated', values: line('allocated', 'memory') },
        { label: 'used', values: line('used', 'memory') }]}/>` : null}
    ${samples.length > 1 && roleNames.length ? html`<${Chart} title="cpus by role" unit="cpus" times=${times}
        series=${roleNames.map((r) => ({ label: r, values: samples.map((s) => ((s.roles || {})[r] || {}).cpus || 0) }))}/>` : null}
    <h2>Roles</h2>
    <table><thead><tr><th>Role</th><th>cpus allocated / limit</th><th>memory allocated / limit</th><th>Guarantee</th><th>Pending</th><th>Share</th></tr></thead>
    <tbody>${[...roles.items.values()].sort((a, b) => a.metadata.name.localeCompare(b.metadata.name)).map((r) => {
      const st = r.status || {};
      const q = limits[r.metadata.name];
      const cell = (res) => {
        const a = quantity((st.allocated || {})[res]);
        const l = q && q.limit && q.limit[res] !== undefined ? quantity(q.limit[res]) : null;
        return html`${amount(res, a)}${l !== null ? html` / ${amount(res, l)} <${Bar} alloc=${a} used=${0} whole=${l} title="of its limit"/>` : ''}`;
      };
      const g = q && q.guarantee ? Object.entries(q.guarantee).map(([k, v]) => `${k} ${v}`).join(', ') : '–';
      const p = Object.entries(st.pending || {}).filter(([, v]) => quantity(v) > 0).map(([k, v]) => `${k} ${amount(k, quantity(v))}`).join(', ') || '–';
      return html`<tr data-role=${r.metadata.name}><td>${r.metadata.name}</td><td>${cell('cpus')}</td><td>${cell('memory')}</td><td>${g}</td><td>${p}</td>
        <td>${st.dominantShare !== undefined ? `${(100 * st.dominantShare).toFixed(1)}%` : '–'}</td></tr>`;
    })}</tbody></table>
    <${More} state=${roles} next=${() => {}}/>`;
}

function ready(n) {
  const c = ((n.status && n.status.conditions) || []).find((x) => x.type === 'Ready');
  return c && c.status === 'True';
}

function Nodes() {
  const [nodes, next] = useLive(`${CORRAL}/nodes`);
  const history = useHistory();
  const alloc = (history && history.nodeAllocated) || {};
  return html`<h1>Nodes</h1>
    <table><thead><tr><th>Node</th><th>State</th><th>cpus (allocated, used)</th><th>memory (allocated, used)</th><th>Conditions</th></tr></thead>
    <tbody>${[...nodes.items.values()].map((n) => {
      const st = n.status || {};
      const whole = Object.keys(st.allocatable || {}).length ? st.allocatable : st.total || {};
      const a = alloc[n.metadata.name] || {};
      const res = (r) => {
        const w = quantity(whole[r]);
        const u = quantity((st.usage || {})[r]);
        return html`<${Bar} alloc=${a[r] || 0} used=${u} whole=${w} title=${`${amount(r, a[r] || 0)} allocated, ${amount(r, u)} used of ${amount(r, w)}`}/> <span class="muted">${amount(r, a[r] || 0)}/${amount(r, w)}</span>`;
      };
      const flags = [ready(n) ? 'Ready' : 'NotReady', n.spec && n.spec.unschedulable ? 'cordoned' : '', n.spec && n.spec.drain ? 'draining' : ''].filter(Boolean);
      return html`<tr data-node=${n.metadata.name}><td>${n.metadata.name}</td><td>${flags.map((f) => html`<${Phase} p=${f}/> `)}</td>
        <td>${res('cpus')}</td><td>${res('memory')}</td>
        <td>${(st.conditions || []).map((c) => html`<div title=${c.message}>${c.type}=${c.status} <span class="muted">${c.reason}</span></div>`)}</td></tr>`;
    })}</tbody></table>
    <p class="muted">Allocated as of the server's last sample (every ${history ? history.intervalSeconds : 30}s); used as each agent last measured.</p>
    <${More} state=${nodes} next=${next}/>`;
}

function Jobs() {
  const [jobs, next] = useLive(scoped('jobs', session.ns));
  return html`<h1>Jobs</h1>
    <table><thead><tr><th>Job</th><th>Role</th><th>Kind</th><th>Instances</th><th>Tasks</th><th>Phase</th><th>Age</th></tr></thead>
    <tbody>${[...jobs.items.values()].map((j) => {
      const st = j.status || {};
      return html`<tr data-job=${key(j)}><td><a href=${`#/jobs/${j.metadata.namespace}/${j.metadata.name}`}>${j.metadata.namespace}/${j.metadata.name}</a></td>
        <td>${j.spec.role}</td><td>${j.spec.kind}</td><td>${j.spec.instances}</td>
        <td>${Object.entries(st.tasks || {}).map(([p, n]) => html`<${Phase} p=${p}/> ${n} `)}</td>
        <td>${st.phase || ''}</td><td>${age(j.metadata.creationTimestamp)}</td></tr>`;
    })}</tbody></table>
    <${More} state=${jobs} next=${next}/>`;
}

function Job({ ns, name }) {
  const [job, setJob] = useState(null);
  const [error, setError] = useState(null);
  useEffect(() => { api(`${CORRAL}/namespaces/${ns}/jobs/${name}`).then(setJob).catch((e) => setError(e.message)); }, [ns, name]);
  const [tasks, next] = useLive(`${CORRAL}/namespaces/${ns}/tasks`, { query: `labelSelector=${encodeURIComponent(`corral.dev/job=${name}`)}` });
  const st = (job && job.status) || {};
  return html`<h1>Job ${ns}/${name}</h1>
    ${error ? html`<p class="error">${error}</p>` : null}
    ${job ? html`<dl class="kv"><dt>Role</dt><dd>${job.spec.role} (${job.spec.tier || 'preemptible'}, priority ${job.spec.priority || 0})</dd>
      <dt>Kind</dt><dd>${job.spec.kind}</dd><dt>Instances</dt><dd>${job.spec.instances}</dd>
      <dt>Resources</dt><dd>${Object.entries(job.spec.resources || {}).map(([k, v]) => `${k} ${v}`).join(', ')}</dd>
      <dt>Phase</dt><dd>${st.phase || ''}</dd>
      ${st.latency && st.latency.timeToRunning ? html`<dt>Time to RUNNING</dt><dd>median ${st.latency.timeToRunning.medianMillis} ms, p99 ${st.latency.timeToRunning.p99Millis} ms</dd>` : null}
      ${st.update ? html`<dt>Update</dt><dd>${st.update.state}</dd>` : null}</dl>` : null}
    <h2>Instances</h2>
    <table><thead><tr><th>Task</th><th>Phase</th><th>Node</th><th>Why</th><th>Age</th></tr></thead>
    <tbody>${[...tasks.items.values()].sort((a, b) => (a.spec.instanceId - b.spec.instanceId) || a.metadata.name.localeCompare(b.metadata.name)).map((t) => html`
      <tr data-task=${t.metadata.name}><td><a href=${`#/tasks/${ns}/${t.metadata.name}`}>${t.metadata.name}</a></td>
        <td><${Phase} p=${phaseOf(t)}/></td><td>${t.spec.nodeName || ''}</td>
        <td class="muted">${(t.status && t.status.explanation && phaseOf(t) === 'PENDING') ? t.status.explanation.summary : ((t.status && t.status.message) || '')}</td>
        <td>${age(t.metadata.creationTimestamp)}</td></tr>`)}</tbody></table>
    <${More} state=${tasks} next=${next}/>`;
}

function Logs({ ns, name }) {
  const [text, setText] = useState('');
  const [follow, setFollow] = useState(false);
  const [error, setError] = useState(null);
  useEffect(() => {
    const abort = new AbortController();
    setText('');
    setError(null);
    stream(`${CORRAL}/namespaces/${ns}/tasks/${name}/log?tailLines=500${follow ? '&follow=true' : ''}`, abort.signal, (t) => setText((old) => (old + t).slice(-200000)))
      .catch((e) => { if (!abort.signal.aborted) setError(e.message); });
    return () => abort.abort();
  }, [ns, name, follow]);
  return html`<div class="row"><h2>Logs</h2><label><input type="checkbox" checked=${follow} onChange=${(e) => setFollow(e.target.checked)}/> follow</label></div>
    ${error ? html`<p class="muted">${error}</p>` : html`<pre class="log">${text || '(no output yet)'}</pre>`}`;
}

function Task({ ns, name }) {
  const [tasks] = useLive(`${CORRAL}/namespaces/${ns}/tasks`, { query: `fieldSelector=${encodeURIComponent(`metadata.name=${name}`)}` });
  const [events] = useLive(`/api/v1/namespaces/${ns}/events`, { query: `fieldSelector=${encodeURIComponent(`involvedObject.name=${name}`)}` });
  const t = tasks.items.get(`${ns}/${name}`);
  if (!t) return html`<h1>Task ${ns}/${name}</h1><${More} state=${tasks} next=${() => {}}/>${tasks.loaded && !tasks.error ? html`<p class="muted">No such task.</p>` : null}`;
  const st = t.status || {};
  const created = Date.parse(t.metadata.creationTimestamp);
  const first = (p) => (st.taskEvents || []).find((e) => e.status === p);
  const since = (p) => { const e = first(p); return e ? `${((Date.parse(e.timestamp) - created) / 1000).toFixed(2)} s` : '–'; };
  const preempted = (st.conditions || []).find((c) => c.type === 'Preempted' && c.status === 'True');
  return html`<h1>Task ${ns}/${name} <${Phase} p=${phaseOf(t)}/></h1>
    <dl class="kv"><dt>Job</dt><dd><a href=${`#/jobs/${ns}/${t.spec.job}`}>${t.spec.job}</a> instance ${t.spec.instanceId}</dd>
      <dt>Role</dt><dd>${t.spec.role}</dd><dt>Node</dt><dd>${t.spec.nodeName || '–'}</dd>
      <dt>Resources</dt><dd>${Object.entries(t.spec.resources || {}).map(([k, v]) => `${k} ${v}`).join(', ')}${st.usage ? html` <span class="muted">(using ${Object.entries(st.usage).map(([k, v]) => `${k} ${amount(k, quantity(v))}`).join(', ')})</span>` : ''}</dd>
      <dt>To ASSIGNED / STARTING / RUNNING</dt><dd data-latency>${since('ASSIGNED')} / ${since('STARTING')} / ${since('RUNNING')}</dd>
      ${st.message ? html`<dt>Message</dt><dd>${st.message}</dd>` : null}
      ${preempted ? html`<dt>Preempted</dt><dd data-preempted>${preempted.message}</dd>` : null}</dl>
    ${st.explanation && phaseOf(t) === 'PENDING' ? html`<h2>Why it is pending</h2><p data-why>${st.explanation.summary}</p>
      <ul>${(st.explanation.reasons || []).map((r) => html`<li><strong>${r.kind}</strong>: ${r.message}</li>`)}</ul>` : null}
    <h2>Timeline</h2>
    <ul class="timeline" data-timeline>${(st.taskEvents || []).map((e) => html`<li><${Phase} p=${e.status}/> <span class="muted">${new Date(e.timestamp).toLocaleTimeString()} · ${e.actor}</span><div>${e.message}</div></li>`)}</ul>
    <h2>Events</h2>
    <table><tbody>${[...events.items.values()].sort((a, b) => Date.parse(b.lastTimestamp || b.eventTime || 0) - Date.parse(a.lastTimestamp || a.eventTime || 0)).map((e) => html`
      <tr><td>${e.type}</td><td>${e.reason}</td><td>${e.message}</td><td class="muted">${age(e.lastTimestamp || e.eventTime)}</td></tr>`)}</tbody></table>
    <${Logs} ns=${ns} name=${name}/>`;
}

// Task transitions as they happen: the taskEvents of a first page of tasks,
// then those each watched change brings (no list of every task).
function useTaskFeed(ns) {
  const [rows, setRows] = useState([]);
  useEffect(() => {
    const abort = new AbortController();
    const seen = new Set();
    let all = [];
    const take = (t) => {
      for (const e of (t.status && t.status.taskEvents) || []) {
        const id = `${key(t)}|${e.timestamp}|${e.status}`;
        if (seen.has(id)) continue;
        seen.add(id);
        all.push({ time: Date.parse(e.timestamp), ns: t.metadata.namespace, name: t.metadata.name, status: e.status, actor: e.actor, message: e.message });
      }
    };
    const publish = () => { all = all.sort((a, b) => b.time - a.time).slice(0, 500); setRows(all); };
    (async () => {
      const path = scoped('tasks', ns);
      const l = await api(`${path}?limit=${PAGE}`, { signal: abort.signal });
      l.items.forEach(take);
      publish();
      await watch(path, l.metadata.resourceVersion, abort.signal, (ev) => {
        if (ev.type === 'ADDED' || ev.type === 'MODIFIED') { take(ev.object); publish(); }
      });
    })().catch(() => {});
    return () => abort.abort();
  }, [ns]);
  return rows;
}

function Events() {
  const path = session.ns ? `/api/v1/namespaces/${session.ns}/events` : '/api/v1/events';
  const [events, next] = useLive(path);
  const feed = useTaskFeed(session.ns);
  const when = (e) => Date.parse(e.lastTimestamp || e.eventTime || e.metadata.creationTimestamp || 0);
  const rows = [
    ...[...events.items.values()].map((e) => ({
      time: when(e), type: e.type, reason: e.reason, message: e.message,
      object: e.involvedObject.kind === 'Task'
        ? html`<a href=${`#/tasks/${e.involvedObject.namespace}/${e.involvedObject.name}`}>task/${e.involvedObject.name}</a>`
        : `${(e.involvedObject.kind || '').toLowerCase()}/${e.involvedObject.name}` })),
    ...feed.map((r) => ({
      time: r.time, type: r.actor, reason: html`<${Phase} p=${r.status}/>`, message: r.message,
      object: html`<a href=${`#/tasks/${r.ns}/${r.name}`}>task/${r.name}</a>` })),
  ].sort((a, b) => b.time - a.time);
  return html`<h1>Events</h1>
    <p class="muted">Events, and task transitions (with who made them) as they happen.</p>
    <table><thead><tr><th>When</th><th>Type or actor</th><th>Reason</th><th>Object</th><th>Message</th></tr></thead>
    <tbody>${rows.map((r) => html`<tr data-event><td class="muted">${age(new Date(r.time).toISOString())}</td><td>${r.type}</td>
      <td>${r.reason}</td><td>${r.object}</td><td>${r.message}</td></tr>`)}</tbody></table>
    <${More} state=${events} next=${next}/>`;
}

function SignIn({ onSignedIn }) {
  const [token, setToken] = useState('');
  const [error, setError] = useState(null);
  const submit = async (e, withToken) => {
    e.preventDefault();
    session.token = withToken ? token.trim() : '';
    try {
      session.user = await whoami();
      if (session.token) sessionStorage.setItem('corral.token', session.token);
      onSignedIn();
    } catch (err) {
      session.token = '';
      setError(withToken ? `The server does not accept this token: ${err.message}` : `No client certificate the server accepts was presented: ${err.message}`);
    }
  };
  return html`<form class="signin" onSubmit=${(e) => submit(e, true)}>
    <h1>Sign in to Corral</h1>
    <label>Bearer token<input type="password" name="token" autocomplete="off" value=${token} onInput=${(e) => setToken(e.target.value)}/></label>
    <div class="row"><button class="primary" type="submit">Sign in</button>
      <button type="button" onClick=${(e) => submit(e, false)}>Use my client certificate</button></div>
    ${error ? html`<p class="error">${error}</p>` : null}
    <p class="muted">The token stays in this tab only. What you see is what the API lets you read.</p></form>`;
}

function route() {
  const parts = location.hash.replace(/^#\/?/, '').split('/').filter(Boolean).map(decodeURIComponent);
  return parts;
}

function App() {
  const [parts, setParts] = useState(route());
  const [user, setUser] = useState(session.user);
  const [ns, setNs] = useState(session.ns);
  useEffect(() => {
    const on = () => setParts(route());
    window.addEventListener('hashchange', on);
    return () => window.removeEventListener('hashchange', on);
  }, []);
  useEffect(() => {
    if (!user && parts[0] !== 'signin') {
      whoami().then((u) => { session.user = u; setUser(u); }).catch(() => go('#/signin'));
    }
  }, [user, parts[0]]);
  if (parts[0] === 'signin' || !user) {
    return html`<${SignIn} onSignedIn=${() => { setUser(session.user); go('#/'); }}/>`;
  }
  const page = parts[0] || 'overview';
  let body;
  if (page === 'nodes') body = html`<${Nodes}/>`;
  else if (page === 'jobs' && parts.length === 3) body = html`<${Job} ns=${parts[1]} name=${parts[2]}/>`;
  else if (page === 'jobs') body = html`<${Jobs} key=${ns}/>`;
  else if (page === 'tasks' && parts.length === 3) body = html`<${Task} ns=${parts[1]} name=${parts[2]}/>`;
  else if (page === 'events') body = html`<${Events} key=${ns}/>`;
  else body = html`<${Overview}/>`;
  const link = (to, label) => html`<a href=${to} class=${(page === to.slice(2) || (to === '#/' && page === 'overview')) ? 'on' : ''}>${label}</a>`;
  return html`<header><span class="brand">CORRAL</span>
      <nav>${link('#/', 'Cluster')}${link('#/nodes', 'Nodes')}${link('#/jobs', 'Jobs')}${link('#/events', 'Events')}</nav>
      <label class="muted">namespace <input size="12" placeholder="all" value=${ns} onChange=${(e) => { session.ns = e.target.value.trim(); sessionStorage.setItem('corral.ns', session.ns); setNs(session.ns); }}/></label>
      <span class="who" data-user>${user}</span><button onClick=${signOut}>Sign out</button></header>
    <main>${body}</main>`;
}

const root = document.getElementById('app');
root.textContent = '';
render(html`<${App}/>`, root);
