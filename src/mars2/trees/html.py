"""One self-contained HTML page for every tree of a file: inline CSS, inline JS, SVG drawn in the page; no
network access (no CDN, no fonts, no images). The trees are embedded as JSON in a
``<script type="application/json" id="tree-data">`` element.

Page: a list of the trees (search key, problem, outcome, nodes) with filters by problem (substring), search
key and outcome; the selected tree drawn as SVG (colour = what the node passes, ring + ★ = the final
answer, label = node id); a click on a node shows its agent, policy, depth, score, reward, public / hidden
tests passed, program (or raw response) and the feedback it produced and received. Keys: j / k or the
arrow keys move through the listed trees."""
from __future__ import annotations

import html
import json
from typing import Any

from mars2.trees.model import OUTCOME_LABELS, STATUS_LABELS, ViewTree

COLORS = {"hidden_pass": "#2e9e44", "public_pass": "#e39b1b", "partial": "#d4603a", "fail": "#c0392b",
          "no_code": "#9aa0a6", "root": "#4a5a70"}

CSS = """
*{box-sizing:border-box}body{margin:0;font:13px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:#1d2330;background:#f6f7f9}
header{padding:8px 14px;background:#1d2330;color:#fff;display:flex;gap:18px;align-items:baseline;flex-wrap:wrap}
header h1{font-size:15px;margin:0}header .meta{opacity:.8}
#app{display:grid;grid-template-columns:290px 1fr 400px;height:calc(100vh - 38px)}
#side{border-right:1px solid #d8dce3;overflow:auto;background:#fff}
#filters{padding:8px;display:grid;gap:6px;border-bottom:1px solid #e4e7ec;position:sticky;top:0;background:#fff}
#filters input,#filters select{width:100%;padding:4px 6px;font:inherit}
#count{color:#5b6473}
#tree-list{list-style:none;margin:0;padding:0}
#tree-list li{padding:6px 8px;border-bottom:1px solid #eef0f3;cursor:pointer;display:grid;grid-template-columns:12px 1fr auto;gap:6px;align-items:center}
#tree-list li:hover{background:#f0f4fa}#tree-list li.selected{background:#dde8f7}
#tree-list .prob{font-family:ui-monospace,Menlo,monospace;font-size:12px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
#tree-list .sub{color:#6b7280;font-size:11px}
.dot{width:10px;height:10px;border-radius:50%;display:inline-block}
.o-solved{background:#2e9e44}.o-missed{background:#7b5cd6}.o-overfit{background:#e39b1b}.o-unsolved{background:#c0392b}
#main{overflow:auto;position:relative;background:#fbfcfd}
#main h2{font-size:14px;margin:10px 14px 2px}#main .summary{margin:0 14px 6px;color:#4b5563}
#legend{margin:0 14px 6px;display:flex;gap:12px;flex-wrap:wrap;color:#4b5563;font-size:12px}
#legend span{display:inline-flex;gap:4px;align-items:center}
svg .edge{stroke:#b3bac5;stroke-width:1.5;fill:none}
svg .node circle.body{stroke:#fff;stroke-width:1.5;cursor:pointer}
svg .node text{font-size:10px;fill:#fff;pointer-events:none;text-anchor:middle;dominant-baseline:central}
svg .node.final circle.ring{fill:none;stroke:#f5b301;stroke-width:3.5}
svg .node.selected circle.body{stroke:#1d2330;stroke-width:3}
svg .node text.star{font-size:17px;fill:#f5b301;text-anchor:middle;dominant-baseline:auto}
svg .depth{font-size:10px;fill:#9aa0a6}
#detail{border-left:1px solid #d8dce3;overflow:auto;background:#fff;padding:10px 12px}
#detail h3{margin:4px 0 8px;font-size:14px}#detail table{border-collapse:collapse;width:100%;margin-bottom:8px}
#detail td{padding:2px 4px;border-bottom:1px solid #f0f1f4;vertical-align:top}#detail td:first-child{color:#6b7280;width:110px}
#detail pre{background:#f4f5f7;border:1px solid #e4e7ec;padding:6px;white-space:pre-wrap;word-break:break-word;font:11.5px/1.35 ui-monospace,Menlo,monospace;max-height:340px;overflow:auto}
.badge{display:inline-block;padding:0 6px;border-radius:8px;color:#fff;font-size:11px}
.empty{padding:20px;color:#6b7280}
"""

JS = r"""
(function(){
const DATA = JSON.parse(document.getElementById('tree-data').textContent);
const COLORS = DATA.colors, STATUS = DATA.status_labels, OUTCOME = DATA.outcome_labels;
const DX = 46, DY = 74, R = 13, PAD = 30;
const $ = (id) => document.getElementById(id);
const NS = 'http://www.w3.org/2000/svg';
let shown = [], current = -1, selectedNode = null;
function esc(s){ return String(s == null ? '' : s).replace(/[&<>"]/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c])); }
function fmt(x, d){ return (typeof x === 'number' && isFinite(x)) ? x.toFixed(d == null ? 3 : d) : String(x); }
function el(tag, attrs, parent){ const e = document.createElementNS(NS, tag); for (const k in attrs) e.setAttribute(k, attrs[k]); if (parent) parent.appendChild(e); return e; }
function applyFilters(){
  const q = $('f-problem').value.trim().toLowerCase(), s = $('f-search').value, o = $('f-outcome').value;
  shown = [];
  DATA.trees.forEach((t, i) => {
    if (q && t.problem.toLowerCase().indexOf(q) < 0) return;
    if (s && t.search !== s) return;
    if (o && t.outcome !== o) return;
    shown.push(i);
  });
  const ul = $('tree-list'); ul.innerHTML = '';
  shown.forEach(i => {
    const t = DATA.trees[i], li = document.createElement('li');
    li.className = 'tree-item'; li.dataset.index = i; li.dataset.outcome = t.outcome;
    li.innerHTML = '<span class="dot o-' + t.outcome + '" title="' + esc(OUTCOME[t.outcome]) + '"></span>' +
      '<div><div class="prob">' + esc(t.problem) + '</div><div class="sub">' + esc(t.search) + ' · ' + t.n_nodes + ' nodes · depth ' + t.depth + '</div></div>' +
      '<span class="sub">' + fmt(t.best_score, 2) + '</span>';
    li.onclick = () => show(i);
    ul.appendChild(li);
  });
  $('count').textContent = shown.length + ' of ' + DATA.trees.length + ' trees';
  if (shown.length === 0) { current = -1; $('canvas').innerHTML = '<div class="empty">No tree matches the filters.</div>'; $('title').textContent = ''; $('summary').textContent = ''; $('detail').innerHTML = ''; return; }
  show(shown.indexOf(current) >= 0 ? current : shown[0]);
}
function show(i){
  current = i; selectedNode = null;
  document.querySelectorAll('#tree-list li').forEach(li => li.classList.toggle('selected', +li.dataset.index === i));
  const t = DATA.trees[i];
  $('title').textContent = t.problem + '  (' + t.search + ')';
  $('summary').innerHTML = '<span class="badge o-' + t.outcome + '">' + esc(OUTCOME[t.outcome]) + '</span> ' +
    t.n_nodes + ' nodes, depth ' + t.depth + ', agents: ' + esc(t.agents.join(', ') || '-') + '; final answer: ' + (t.final == null ? 'none' : '#' + t.final);
  draw(t);
  if (t.final != null) detail(t, t.final); else $('detail').innerHTML = '<div class="empty">Click a node.</div>';
}
function draw(t){
  const c = $('canvas'); c.innerHTML = '';
  const maxDepth = t.depth;
  const W = Math.max(1, t.width) * DX + 2 * PAD, H = (maxDepth + 1) * DY + 2 * PAD;
  const svg = el('svg', {width: W, height: H, viewBox: '0 0 ' + W + ' ' + H, id: 'tree-svg', 'data-nodes': t.n_nodes}, c);
  const pos = {};
  t.nodes.forEach(n => { pos[n.id] = [PAD + n.x * DX + DX / 2, PAD + n.depth * DY + R]; });
  for (let d = 1; d <= maxDepth; d++) { const tx = el('text', {x: 4, y: PAD + d * DY + R, class: 'depth'}, svg); tx.textContent = 'd' + d; }
  t.nodes.forEach(n => { if (n.parent == null || !(n.parent in pos)) return; const a = pos[n.parent], b = pos[n.id];
    const my = (a[1] + b[1]) / 2; el('path', {d: 'M' + a[0] + ',' + a[1] + ' C' + a[0] + ',' + my + ' ' + b[0] + ',' + my + ' ' + b[0] + ',' + b[1], class: 'edge'}, svg); });
  t.nodes.forEach(n => {
    const p = pos[n.id], real = n.parent != null;
    const g = el('g', {class: 'node' + (real ? ' real' : ' root') + (n.id === t.final ? ' final' : ''), 'data-id': n.id, 'data-status': n.status, transform: 'translate(' + p[0] + ',' + p[1] + ')'}, svg);
    const title = el('title', {}, g);
    title.textContent = real ? ('#' + n.id + ' ' + n.agent + ' · depth ' + n.depth + ' · score ' + fmt(n.score, 2) + ' · ' + STATUS[n.status]) : 'problem ' + t.problem;
    if (n.id === t.final) { el('circle', {r: R + 4, class: 'ring'}, g); const s = el('text', {y: -R - 8, class: 'star'}, g); s.textContent = '★'; }
    const body = el('circle', {r: real ? R : R - 3, class: 'body', fill: COLORS[n.status] || '#888'}, g);
    const lab = el('text', {}, g); lab.textContent = real ? n.id : 'P';
    g.addEventListener('click', () => detail(t, n.id));
  });
}
function detail(t, id){
  const n = t.nodes.find(m => m.id === id); if (!n) return;
  selectedNode = id;
  document.querySelectorAll('#tree-svg g.node').forEach(g => g.classList.toggle('selected', +g.dataset.id === id));
  if (n.parent == null) { $('detail').innerHTML = '<h3>Problem ' + esc(t.problem) + '</h3><p>The virtual root: the problem statement. Its children are fresh answers.</p>'; return; }
  const rows = [
    ['agent', esc(n.agent)], ['policy', esc(n.policy)], ['depth', n.depth], ['parent', n.parent === 0 ? 'root (fresh answer)' : '#' + n.parent],
    ['public score', fmt(n.score)], ['public tests', n.public[0] + ' / ' + n.public[1] + ' passed'],
    ['hidden tests', n.hidden[0] + ' / ' + n.hidden[1] + ' passed'], ['reward', fmt(n.reward)],
    ['status', '<span class="badge" style="background:' + (COLORS[n.status] || '#888') + '">' + esc(STATUS[n.status]) + '</span>'],
    ['truncated', n.truncated ? 'yes' : 'no'], ['final answer', n.id === t.final ? '★ yes' : 'no'], ['children', n.children.length ? n.children.map(c => '#' + c).join(' ') : '-']];
  let h = '<h3>Node #' + n.id + (n.id === t.final ? ' <span title="final answer">★</span>' : '') + '</h3><table>' + rows.map(r => '<tr><td>' + r[0] + '</td><td>' + r[1] + '</td></tr>').join('') + '</table>';
  h += n.program != null ? '<b>Program</b><pre class="program">' + esc(n.program) + '</pre>' : '<b>Response (no code extracted)</b><pre class="program">' + esc(n.text) + '</pre>';
  h += '<b>Feedback it received</b> <span class="sub">(its parent\'s)</span><pre class="received">' + esc(n.received || (n.parent === 0 ? '(none: a fresh answer)' : '(none)')) + '</pre>';
  h += '<b>Feedback on this program</b> <span class="sub">(shown to its refinements)</span><pre class="feedback">' + esc(n.feedback || '(none)') + '</pre>';
  $('detail').innerHTML = h;
}
function init(){
  const ss = $('f-search'); [...new Set(DATA.trees.map(t => t.search))].forEach(s => { const o = document.createElement('option'); o.value = s; o.textContent = s; ss.appendChild(o); });
  const so = $('f-outcome'); Object.keys(OUTCOME).forEach(k => { const n = DATA.trees.filter(t => t.outcome === k).length; const o = document.createElement('option'); o.value = k; o.textContent = OUTCOME[k] + ' (' + n + ')'; so.appendChild(o); });
  const lg = $('legend'); Object.keys(STATUS).forEach(k => { const s = document.createElement('span'); s.innerHTML = '<i class="dot" style="background:' + COLORS[k] + '"></i>' + esc(STATUS[k]); lg.appendChild(s); });
  const f = document.createElement('span'); f.innerHTML = '<b style="color:#f5b301">★ ◯</b> final answer'; lg.appendChild(f);
  ['f-problem', 'f-search', 'f-outcome'].forEach(id => $(id).addEventListener('input', applyFilters));
  document.addEventListener('keydown', e => { if (e.target.tagName === 'INPUT') return; const k = shown.indexOf(current);
    if ((e.key === 'j' || e.key === 'ArrowDown') && k < shown.length - 1) show(shown[k + 1]);
    if ((e.key === 'k' || e.key === 'ArrowUp') && k > 0) show(shown[k - 1]); });
  applyFilters();
  document.body.dataset.ready = '1';
}
init();
})();
"""


def _json_for_script(obj: Any) -> str:
    """JSON safe inside <script>: no '</' (a program may contain '</script>'), no U+2028/2029 surprises."""
    s = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return s.replace("</", "<\\/").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").replace("<!--", "<\\!--")


def page_data(trees: list[ViewTree], source: str) -> dict[str, Any]:
    return {"source": source, "colors": COLORS, "status_labels": STATUS_LABELS, "outcome_labels": OUTCOME_LABELS,
            "trees": [t.as_dict() for t in trees]}


def render_html(trees: list[ViewTree], source: str, title: str | None = None) -> str:
    data = page_data(trees, source)
    n_nodes = sum(t.n_real for t in trees)
    counts = {k: sum(1 for t in trees if t.outcome == k) for k in OUTCOME_LABELS}
    solved = counts["solved"]
    title = title or f"search trees · {source}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:">
<title>{html.escape(title)}</title>
<style>{CSS}</style></head>
<body>
<header><h1>{html.escape(title)}</h1><span class="meta">{len(trees)} trees · {n_nodes} nodes · final answer correct on {solved}/{len(trees)}</span>
<span class="meta">final answer = best public score, ties to the newest node (no reward model)</span></header>
<div id="app">
<aside id="side"><div id="filters">
<input id="f-problem" type="search" placeholder="problem id contains…" aria-label="filter by problem">
<select id="f-search" aria-label="filter by search"><option value="">every search</option></select>
<select id="f-outcome" aria-label="filter by outcome"><option value="">every outcome</option></select>
<span id="count"></span></div>
<ul id="tree-list"></ul></aside>
<main id="main"><h2 id="title"></h2><div class="summary" id="summary"></div><div id="legend"></div><div id="canvas"></div></main>
<section id="detail"></section>
</div>
<script type="application/json" id="tree-data">{_json_for_script(data)}</script>
<script>{JS}</script>
</body></html>
"""
