/**
 * The dashboard's one page: HTML, CSS and a small script, sent whole (no CDN, no second request,
 * nothing to fetch offline). No front-end library: the page is two tables' worth of DOM and one
 * line chart per session, which plain DOM calls and an SVG polyline do in less code than a
 * library's glue, and a library would be one more thing to vendor, audit and keep current.
 *
 * The script reads the token from its own URL, listens to `/events` (server-sent events; the
 * browser reconnects by itself), renders each state it gets, and sends actions as POSTs with the
 * token in `X-Ktctl-Token` after a confirmation in a <dialog>. Text from the cluster goes into the
 * page only through `textContent`, never as HTML.
 */

const STYLE = String.raw`
:root { --bg: #f6f7f9; --card: #fff; --ink: #1d2330; --muted: #6b7280; --line: #e3e6eb;
  --natural: #6b7280; --exchanged: #c2410c; --meshed: #7c3aed; --preview: #0369a1; --stale: #dc2626; --in: #2563eb; --out: #16a34a; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; background: var(--bg); color: var(--ink); }
header { background: #111827; color: #f9fafb; padding: 12px 20px; display: flex; align-items: baseline; gap: 16px; }
header h1 { font-size: 18px; margin: 0; font-weight: 600; }
header .scope { color: #cbd5e1; }
header .live { margin-left: auto; font-size: 12px; color: #86efac; }
header .live.down { color: #fca5a5; }
main { padding: 16px 20px; display: grid; gap: 16px; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 12px 16px; }
section h2 { font-size: 15px; margin: 0 0 8px; display: flex; align-items: center; gap: 8px; }
section h2 .spacer { flex: 1; }
table { width: 100%; border-collapse: collapse; }
th, td { text-align: left; padding: 6px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-weight: 600; color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .03em; }
tr:last-child td { border-bottom: none; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 999px; color: #fff; font-size: 12px; font-weight: 600; }
.badge.natural { background: var(--natural); } .badge.exchanged { background: var(--exchanged); }
.badge.meshed { background: var(--meshed); } .badge.preview { background: var(--preview); }
.badge.stale { background: var(--stale); margin-left: 4px; }
.muted { color: var(--muted); }
.objects { font-size: 12px; color: var(--muted); }
.objects .stale, .who .stale { color: var(--stale); font-weight: 600; }
button { font: inherit; border: 1px solid #cbd5e1; background: #fff; border-radius: 6px; padding: 3px 10px; cursor: pointer; }
button.primary { background: #111827; color: #fff; border-color: #111827; }
button:disabled { opacity: .5; cursor: not-allowed; }
.sessions { display: grid; grid-template-columns: repeat(auto-fill, minmax(360px, 1fr)); gap: 12px; }
.session { border: 1px solid var(--line); border-radius: 8px; padding: 10px 12px; }
.session .title { font-weight: 600; }
.figures { display: grid; grid-template-columns: repeat(3, 1fr); gap: 4px 12px; margin: 8px 0; font-size: 12px; }
.figures b { display: block; font-size: 14px; }
.legend { font-size: 12px; color: var(--muted); }
.legend .in { color: var(--in); } .legend .out { color: var(--out); }
svg.chart { width: 100%; height: 80px; background: #fafbfc; border: 1px solid var(--line); border-radius: 4px; }
#message { white-space: pre-wrap; font-family: ui-monospace, monospace; font-size: 12px; padding: 8px 12px; border-radius: 6px; display: none; }
#message.ok { display: block; background: #ecfdf5; border: 1px solid #a7f3d0; }
#message.error { display: block; background: #fef2f2; border: 1px solid #fecaca; color: #991b1b; }
.note { color: #92400e; background: #fffbeb; border: 1px solid #fde68a; border-radius: 6px; padding: 6px 10px; margin: 6px 0; font-size: 12px; }
dialog { border: 1px solid var(--line); border-radius: 8px; padding: 16px 20px; max-width: 480px; }
dialog .buttons { display: flex; gap: 8px; justify-content: flex-end; margin-top: 12px; }
`;

const SCRIPT = String.raw`
'use strict';
var token = new URLSearchParams(location.search).get('token') || '';
var $ = function (id) { return document.getElementById(id); };
function el(tag, attrs, children) {
  var e = document.createElement(tag);
  if (attrs) for (var k in attrs) { if (k === 'text') e.textContent = attrs[k]; else e.setAttribute(k, attrs[k]); }
  (children || []).forEach(function (c) { if (c) e.appendChild(typeof c === 'string' ? document.createTextNode(c) : c); });
  return e;
}
function ago(s) { if (s === null || s === undefined) return '-'; if (s < 120) return s + ' s'; if (s < 7200) return Math.round(s / 60) + ' min'; return Math.round(s / 3600) + ' h'; }
function bytes(n) { var u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'], i = 0; while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; } return (i ? n.toFixed(1) : String(n)) + ' ' + u[i]; }
function who(h) {
  var span = el('span', { class: 'who' }, [h.owner + ' ', el('span', { class: h.stale ? 'stale' : 'muted', text: '(heartbeat ' + ago(h.heartbeatAgeSeconds) + ' ago' + (h.stale ? ', stale' : '') + ')' })]);
  return span;
}
var last = null;

function renderServices(s) {
  var body = $('services');
  body.textContent = '';
  var b = s.birdseye;
  $('scope').textContent = b ? b.scope : '';
  $('cluster-error').textContent = s.clusterError || '';
  $('cluster-error').hidden = !s.clusterError;
  var notes = $('notes');
  notes.textContent = '';
  (b ? b.missing : []).forEach(function (m) { notes.appendChild(el('div', { class: 'note', text: m })); });
  if (s.actions.recover) notes.appendChild(el('div', { class: 'note', text: 'recover is not available: ' + s.actions.recover }));
  if (s.actions.clean) notes.appendChild(el('div', { class: 'note', text: 'clean is not available: ' + s.actions.clean }));
  $('clean').disabled = !!s.actions.clean;
  if (!b) return;
  var all = b.scope.indexOf('all namespaces') === 0;
  b.rows.forEach(function (r) {
    var state = el('td', null, [el('span', { class: 'badge ' + r.state, text: r.state }), r.stale ? el('span', { class: 'badge stale', text: 'stale' }) : null]);
    var held = el('td');
    if (r.state === 'meshed') r.marks.forEach(function (m) { held.appendChild(el('div', null, [m.mark + ' by ', who(m)])); });
    if (r.state !== 'meshed' || r.marks.length === 0) r.holders.forEach(function (h) { held.appendChild(el('div', null, [who(h)])); });
    if (r.router) held.appendChild(el('div', { class: 'muted', text: 'router ' + r.router }));
    var objects = el('td', { class: 'objects' });
    r.objects.forEach(function (o) {
      objects.appendChild(el('div', { class: o.stale ? 'stale' : '' , text: o.kind + ' ' + o.name + ' \u00b7 age ' + ago(o.ageSeconds) + ' \u00b7 heartbeat ' + ago(o.heartbeatAgeSeconds) + ' ago' + (o.stale ? ' \u00b7 stale' : '') }));
    });
    var action = el('td');
    if (r.stale && r.state !== 'natural') {
      var btn = el('button', { class: 'primary', 'data-action': 'recover', text: 'recover' });
      btn.disabled = !!s.actions.recover;
      btn.addEventListener('click', function () { confirmThen('Recover ' + r.namespace + '/' + r.name + '? Its selector, replicas and lock are put back and ktctl\'s objects for it deleted.', '/api/recover', { namespace: r.namespace, service: r.name }); });
      action.appendChild(btn);
    }
    body.appendChild(el('tr', { 'data-service': r.namespace + '/' + r.name, 'data-state': r.state, 'data-stale': String(r.stale) }, [
      el('td', null, [el('b', { text: all ? r.namespace + '/' + r.name : r.name })]),
      state,
      el('td', { text: r.mode || '' }),
      held,
      el('td', { class: 'muted', text: r.since ? new Date(r.since).toLocaleTimeString() : '' }),
      objects,
      action,
    ]));
  });
  if (b.rows.length === 0) body.appendChild(el('tr', null, [el('td', { colspan: '7', class: 'muted', text: 'no services' })]));
}

function chart(history) {
  var W = 360, H = 80, n = 120;
  var svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  svg.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
  svg.setAttribute('preserveAspectRatio', 'none');
  svg.setAttribute('class', 'chart');
  var max = 1;
  history.forEach(function (h) { max = Math.max(max, h.in, h.out); });
  ['in', 'out'].forEach(function (k) {
    var pts = history.map(function (h, i) { return ((n - history.length + i) * W / (n - 1)).toFixed(1) + ',' + (H - 4 - (h[k] / max) * (H - 12)).toFixed(1); }).join(' ');
    var line = document.createElementNS('http://www.w3.org/2000/svg', 'polyline');
    line.setAttribute('points', pts);
    line.setAttribute('fill', 'none');
    line.setAttribute('stroke', k === 'in' ? '#2563eb' : '#16a34a');
    line.setAttribute('stroke-width', '1.5');
    line.setAttribute('vector-effect', 'non-scaling-stroke');
    svg.appendChild(line);
  });
  var label = document.createElementNS('http://www.w3.org/2000/svg', 'text');
  label.setAttribute('x', '4'); label.setAttribute('y', '11'); label.setAttribute('font-size', '10'); label.setAttribute('fill', '#6b7280');
  label.textContent = 'max ' + bytes(max) + '/s';
  svg.appendChild(label);
  return svg;
}

function renderSessions(s) {
  var box = $('sessions');
  box.textContent = '';
  $('session-count').textContent = '(' + s.sessions.length + ')';
  s.sessions.forEach(function (x) {
    if (x.error) { box.appendChild(el('div', { class: 'session', 'data-pid': String(x.pid) }, [el('div', { class: 'title', text: 'pid ' + x.pid }), el('div', { class: 'muted', text: x.error })])); return; }
    var f = x.figures;
    var what = [f.command, f.mode ? '--mode ' + f.mode : '', f.target].filter(Boolean).join(' ');
    var fig = function (label, value, id) { return el('div', null, [label, el('b', { 'data-figure': id, text: value })]); };
    box.appendChild(el('div', { class: 'session', 'data-pid': String(f.pid) }, [
      el('div', { class: 'title', text: what }),
      el('div', { class: 'muted', text: 'pid ' + f.pid + ' \u00b7 through ' + f.transport + (f.via ? ' (--via)' : '') + ' \u00b7 since ' + new Date(f.startedAt).toLocaleTimeString() }),
      el('div', { class: 'figures' }, [
        fig('bytes in', bytes(f.bytes.in), 'bytes-in'), fig('bytes out', bytes(f.bytes.out), 'bytes-out'), fig('flows open', f.flows.open + ' (' + f.flows.opened + ' in all)', 'flows'),
        fig('in now', bytes(f.rates.in) + '/s', 'rate-in'), fig('out now', bytes(f.rates.out) + '/s', 'rate-out'), fig('round trip', f.rttMs === null ? '-' : f.rttMs + ' ms', 'rtt'),
        fig('dns', f.dns.queries + ' queries, ' + f.dns.answers + ' answers', 'dns'), fig('reconnects', String(f.reconnects), 'reconnects'),
        fig('streams resumed / lost', f.streams ? f.streams.resumed + ' / ' + f.streams.lost : 'resume off', 'streams'),
      ]),
      chart(f.history),
      el('div', { class: 'legend' }, [el('span', { class: 'in', text: '\u2014 in' }), ' ', el('span', { class: 'out', text: '\u2014 out' }), ' \u00b7 bytes per second, last 2 minutes']),
    ]));
    box.lastChild.querySelector('[data-figure="bytes-in"]').setAttribute('data-value', String(f.bytes.in));
  });
  if (s.sessions.length === 0) box.appendChild(el('div', { class: 'muted', text: 'no ktctl session runs on this machine' }));
}

function render(s) { last = s; renderServices(s); renderSessions(s); $('updated').textContent = 'updated ' + new Date(s.at).toLocaleTimeString(); }

function message(kind, text) { var m = $('message'); m.className = kind; m.textContent = text; }

var pending = null;
function confirmThen(question, path, body) {
  pending = { path: path, body: body };
  $('confirm-text').textContent = question;
  $('confirm').showModal();
}
$('confirm-ok').addEventListener('click', function () {
  var p = pending; pending = null; $('confirm').close();
  if (!p) return;
  message('ok', 'working\u2026');
  fetch(p.path, { method: 'POST', headers: { 'Content-Type': 'application/json', 'X-Ktctl-Token': token }, body: JSON.stringify(p.body) })
    .then(function (r) { return r.json(); })
    .then(function (v) { if (v.ok) message('ok', (v.lines || []).join('\n') || 'done'); else message('error', v.error + ((v.lines || []).length ? '\n' + v.lines.join('\n') : '')); })
    .catch(function (e) { message('error', String(e)); });
});
$('confirm-cancel').addEventListener('click', function () { pending = null; $('confirm').close(); });
$('clean').addEventListener('click', function () { confirmThen('Clean stale objects? ktctl objects whose heartbeat is older than 5 minutes are deleted or restored, as ktctl clean does.', '/api/clean', {}); });

var events = new EventSource('/events?token=' + encodeURIComponent(token));
events.addEventListener('state', function (e) { render(JSON.parse(e.data)); });
events.onopen = function () { $('live').textContent = 'live'; $('live').className = 'live'; };
events.onerror = function () { $('live').textContent = 'reconnecting\u2026'; $('live').className = 'live down'; };
`;

/** The page, with `nonce` on its script and style (the Content-Security-Policy allows only those). */
export function dashboardPage(nonce: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>ktctl dashboard</title>
<style nonce="${nonce}">${STYLE}</style>
</head>
<body>
<header><h1>ktctl dashboard</h1><span class="scope" id="scope"></span><span class="live down" id="live">connecting…</span></header>
<main>
<div id="message"></div>
<section>
<h2>Services <span class="spacer"></span><span class="muted" id="updated"></span><button id="clean">clean stale objects</button></h2>
<div class="note" id="cluster-error" hidden></div>
<div id="notes"></div>
<table>
<thead><tr><th>service</th><th>state</th><th>mode</th><th>held by</th><th>since</th><th>ktctl objects</th><th></th></tr></thead>
<tbody id="services"></tbody>
</table>
</section>
<section>
<h2>This machine's sessions <span class="muted" id="session-count"></span></h2>
<div class="sessions" id="sessions"></div>
</section>
</main>
<dialog id="confirm"><div id="confirm-text"></div><div class="buttons"><button id="confirm-cancel">cancel</button><button class="primary" id="confirm-ok">confirm</button></div></dialog>
<script nonce="${nonce}">${SCRIPT}</script>
</body>
</html>
`;
}
