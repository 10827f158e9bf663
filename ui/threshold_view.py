"""The Threshold page's instant view: the threshold slider answered in the browser, within a frame.

Everything a move changes is a pure function of data that does not change while the pointer moves (the run's scores
and poison mask, the measured sweep curves, the example pool's scores): sent once per run and score (sorted scores
as base64 float32, about 280 KB for the paper run's 35,288), then every move is computed and drawn by the page's own
JavaScript: the kept / dropped x clean / poisoned counts (two binary searches), precision, recall, F1, the operating
points on the histogram, ROC and precision-recall panels, the student's accuracy read from the sweep (measured,
interpolated or not measured: core.experiments.sweep.accuracy_at's rule), random and oracle at the same share
(core.experiments.sweep.curve_at_share) and the kept / dropped example grids. The value goes back to the server (the
session, the link, the other pages, *Train at this threshold*) when the drag ends. tests/test_threshold_view.py checks
the page's numbers against core's for hundreds of thresholds. A Streamlit components-v2 component (inline HTML / CSS /
JS in the app's page, no iframe, no second server); the server-side view stays for a browser without JavaScript.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import streamlit as st
from PIL import Image

from core.detectors.detect import filter_label
from core.experiments.sweep import METRICS
from ui.data import (
    cached_curves,
    cached_example_pool,
    cached_run,
    cached_scores,
    score_histogram,
    shown,
    slider_range,
)

CSS = """
.tv { font-family: var(--st-font, sans-serif); color: var(--st-text-color, #262730); }
.tv-row { display: flex; gap: 1.2rem; align-items: center; flex-wrap: wrap; }
.tv input[type=range] { flex: 1 1 30rem; accent-color: var(--st-primary-color, #ff4b4b); }
.tv-value { font-variant-numeric: tabular-nums; font-size: 1.1rem; min-width: 7rem; }
.tv-metrics { display: grid; grid-template-columns: repeat(6, minmax(6rem, 1fr)); gap: .4rem; margin: .6rem 0; }
.tv-metric .l { font-size: .8rem; opacity: .75; }
.tv-metric .v { font-size: 1.5rem; font-variant-numeric: tabular-nums; }
.tv table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
.tv td, .tv th { border: 1px solid #ddd; padding: .2rem .6rem; text-align: right; }
.tv-panels { display: grid; grid-template-columns: repeat(auto-fit, minmax(300px, 1fr)); gap: .8rem; }
.tv-panels svg { max-height: 250px; }
.tv-student { margin: .6rem 0; } .tv-note { font-size: .85rem; opacity: .8; }
.tv-grid { display: flex; flex-wrap: wrap; gap: 6px; } .tv-tile { text-align: center; font-size: .9rem; }
.tv-tile img { width: 88px; height: 88px; image-rendering: pixelated; border: 3px solid; display: block; }
"""

HTML = '<div class="tv"></div>'

JS = r"""
function floats(b64) {
  const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
  return new Float32Array(bytes.buffer);
}
function above(sorted, t) {  // how many values are > t (sorted ascending)
  let lo = 0, hi = sorted.length;
  while (lo < hi) { const mid = (lo + hi) >> 1; if (sorted[mid] > t) hi = mid; else lo = mid + 1; }
  return sorted.length - lo;
}
const METRICS = ["clean_acc", "fgsm_acc", "ifgsm_acc", "adaptive_acc"];
const RELEASE_AFTER_MS = 300;  // a pause this long ends a burst of key presses
function accuracyAt(detector, t, tol) {  // core.experiments.sweep.accuracy_at
  const pts = detector;  // sorted by threshold
  let nearest = pts[0];
  for (const p of pts) if (Math.abs(p.threshold - t) < Math.abs(nearest.threshold - t)) nearest = p;
  const last = pts[pts.length - 1];
  const keepsAll = last.target_share === 0 && t >= last.threshold;
  if (Math.abs(nearest.threshold - t) <= tol || keepsAll) {
    const chosen = keepsAll ? last : nearest;
    return {...chosen.mean, where: "measured", n_seeds: chosen.n_seeds};
  }
  if (!(pts[0].threshold < t && t < last.threshold)) {
    const none = {}; for (const k of METRICS) none[k] = null;
    return {...none, where: "not measured", n_seeds: 0};
  }
  for (let i = 0; i + 1 < pts.length; i++) {
    const low = pts[i], high = pts[i + 1];
    if (low.threshold <= t && t <= high.threshold) {
      const w = (t - low.threshold) / Math.max(high.threshold - low.threshold, 1e-12);
      const out = {where: "interpolated", n_seeds: Math.min(low.n_seeds, high.n_seeds)};
      for (const k of METRICS) out[k] = low.mean[k] + w * (high.mean[k] - low.mean[k]);
      return out;
    }
  }
}
function curveAtShare(points, share) {  // core.experiments.sweep.curve_at_share; points sorted by drop_share
  if (share <= points[0].drop_share) return points[0].mean;
  const last = points[points.length - 1];
  if (share >= last.drop_share) return last.mean;
  for (let i = 0; i + 1 < points.length; i++) {
    const low = points[i], high = points[i + 1];
    if (low.drop_share <= share && share <= high.drop_share) {
      const w = (share - low.drop_share) / Math.max(high.drop_share - low.drop_share, 1e-12);
      const out = {}; for (const k of METRICS) out[k] = low.mean[k] + w * (high.mean[k] - low.mean[k]);
      return out;
    }
  }
}
const pct = v => v === null || v === undefined ? "-" : (100 * v).toFixed(2) + "%";
const int = v => v.toLocaleString("en-US");
const svgNS = "http://www.w3.org/2000/svg";
function el(tag, attrs, parent) {
  const node = document.createElementNS(svgNS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (parent) parent.appendChild(node);
  return node;
}
export default function (component) {
  const mountedAt = performance.now();
  const { data, setStateValue, parentElement } = component;
  const root = parentElement.querySelector(".tv");
  root.innerHTML = "";
  const clean = floats(data.clean), poisoned = floats(data.poisoned);
  const nClean = clean.length, nPoisoned = poisoned.length, n = nClean + nPoisoned;
  const sweep = data.sweep;

  function compute(t) {
    const droppedClean = above(clean, t), droppedPoisoned = above(poisoned, t);
    const dropped = droppedClean + droppedPoisoned;
    const precision = dropped ? droppedPoisoned / dropped : 0;
    const recall = nPoisoned ? droppedPoisoned / nPoisoned : 0;
    const f1 = precision + recall ? 2 * precision * recall / (precision + recall) : 0;
    const out = {
      threshold: t, kept_clean: nClean - droppedClean, kept_poisoned: nPoisoned - droppedPoisoned,
      dropped_clean: droppedClean, dropped_poisoned: droppedPoisoned, precision, recall, f1,
      kept: n - dropped, fpr: droppedClean / Math.max(nClean, 1), tpr: droppedPoisoned / Math.max(nPoisoned, 1),
      drop_share: dropped / Math.max(n, 1),
    };
    if (sweep) {
      out.accuracy = accuracyAt(sweep.detector, t, data.tolerance);
      for (const name of ["random", "oracle"]) if (sweep[name]) out[name] = curveAtShare(sweep[name], out.drop_share);
    }
    return out;
  }

  // ---- the page, built once per run and score ----
  root.innerHTML = `
    <div class="tv-row"><input type="range" min="${data.low}" max="${data.high}" step="${data.step}"
      value="${data.value}" aria-label="threshold"><span class="tv-value"></span></div>
    <div class="tv-metrics"></div>
    <div class="tv-row" style="align-items:flex-start">
      <table class="tv-table"><tr><th></th><th>clean</th><th>poisoned</th></tr>
        <tr><th>kept</th><td data-k="kept_clean"></td><td data-k="kept_poisoned"></td></tr>
        <tr><th>dropped</th><td data-k="dropped_clean"></td><td data-k="dropped_poisoned"></td></tr></table>
      <div class="tv-student" style="flex:1"></div>
    </div>
    <div class="tv-panels"></div>
    <div class="tv-pools"></div>`;
  const slider = root.querySelector("input[type=range]");
  const valueText = root.querySelector(".tv-value");
  const metricsBox = root.querySelector(".tv-metrics");
  const names = [["kept", "kept"], ["dropped", "dropped"], ["precision", "precision"], ["recall", "recall"],
                 ["f1", "F1"], ["auroc", "ROC AUC of the score"]];
  const metricValue = {};
  for (const [key, label] of names) {
    const box = document.createElement("div"); box.className = "tv-metric";
    box.innerHTML = `<div class="l">${label}</div><div class="v"></div>`;
    metricsBox.appendChild(box); metricValue[key] = box.querySelector(".v");
  }
  metricValue.auroc.textContent = data.auroc.toFixed(3);
  const cells = {}; root.querySelectorAll("td[data-k]").forEach(td => cells[td.dataset.k] = td);
  const student = root.querySelector(".tv-student");
  // the student's block is built once; a move only changes its texts (re-parsing HTML on every move cost a frame)
  const studentText = {};
  if (sweep) {
    student.innerHTML = `<b>Student at this threshold</b>: <span data-s="how"></span> (<span data-s="note"></span>)
      <div class="tv-row">clean <b data-s="clean_acc"></b> · FGSM <b data-s="fgsm_acc"></b> · I-FGSM
      <b data-s="ifgsm_acc"></b> · adaptive worst case <b data-s="adaptive_acc"></b></div>
      <div class="tv-note">Dropping the same share (<span data-s="share"></span>%)
      <span data-s="controls"></span></div>`;
    student.querySelectorAll("[data-s]").forEach(node => { studentText[node.dataset.s] = node; });
    studentText.note.textContent = data.sweep_note;
  } else {
    student.innerHTML = `<span class="tv-note"></span>`;
    student.firstChild.textContent = data.no_sweep;
  }
  const setText = (node, text) => { if (node.textContent !== text) node.textContent = text; };

  // panels: histogram (log counts), ROC, precision-recall; a move only moves the line and the two markers
  const panels = root.querySelector(".tv-panels");
  const W = 300, H = 190, P = 24;
  const hist = el("svg", {viewBox: `0 0 ${W} ${H}`, width: "100%"}, panels);
  el("text", {x: 4, y: 12, "font-size": 11}, hist).textContent = data.label;
  const edges = data.hist.edges, x0 = edges[0], x1 = edges[edges.length - 1];
  const sx = v => P + (W - 2 * P) * (Math.min(Math.max(v, x0), x1) - x0) / Math.max(x1 - x0, 1e-12);
  const top = Math.log10(1 + Math.max(...data.hist.clean, ...data.hist.poisoned));
  const sy = c => H - P - (H - 2 * P) * Math.log10(1 + c) / Math.max(top, 1e-9);
  for (const [counts, colour] of [[data.hist.clean, "#4c78a8"], [data.hist.poisoned, "#e45756"]]) {
    counts.forEach((c, i) => {
      if (c === 0) return;
      const width = Math.max(sx(edges[i + 1]) - sx(edges[i]) - .3, .5);
      el("rect", {x: sx(edges[i]), y: sy(c), width, height: H - P - sy(c), fill: colour, opacity: .6}, hist);
    });
  }
  const line = el("line", {y1: P, y2: H - P, stroke: "black", "stroke-dasharray": "4 3"}, hist);
  function curvePanel(title, xs, ys, xl, yl) {
    const svg = el("svg", {viewBox: `0 0 ${H} ${H}`, width: "100%"}, panels);
    el("text", {x: 4, y: 12, "font-size": 11}, svg).textContent = title;
    const fx = v => P + (H - 2 * P) * v, fy = v => H - P - (H - 2 * P) * v;
    el("rect", {x: P, y: P, width: H - 2 * P, height: H - 2 * P, fill: "none", stroke: "#ccc"}, svg);
    el("polyline", {points: xs.map((x, i) => `${fx(x)},${fy(ys[i])}`).join(" "), fill: "none", stroke: "#4c78a8"}, svg);
    el("text", {x: H / 2 - 20, y: H - 6, "font-size": 10}, svg).textContent = xl;
    el("text", {x: 2, y: H / 2, "font-size": 10}, svg).textContent = yl;
    const dot = el("circle", {r: 5, fill: "#e45756"}, svg);
    return (x, y) => { dot.setAttribute("cx", fx(x)); dot.setAttribute("cy", fy(y)); };
  }
  const rocDot = curvePanel("ROC: dropping poisons", data.roc[0], data.roc[1], "FPR", "TPR");
  const prDot = curvePanel("Precision-recall", data.pr[0], data.pr[1], "recall", "precision");
  const sweepMark = sweep ? sweepPanel() : null;

  // the measured sweep: the student's accuracy against the share dropped (the DAE's curve, random, oracle); a move
  // slides the line and the dot, as the server's chart does on release
  function sweepPanel() {
    const SW = 300;
    const svg = el("svg", {viewBox: `0 0 ${SW} ${H}`, width: "100%"}, panels);
    el("text", {x: 4, y: 11, "font-size": 11}, svg).textContent = "Student vs share dropped (measured sweep)";
    const lines = [
      ["detector", "clean_acc", "#4c78a8", "", "clean"], ["detector", "ifgsm_acc", "#f58518", "", "I-FGSM"],
      ["random", "clean_acc", "#888", "4 3", "random"], ["oracle", "clean_acc", "#54a24b", "1 3", "oracle"],
    ].filter(([name]) => sweep[name]);
    const values = lines.flatMap(([name, key]) => sweep[name].map(p => p.mean[key])).filter(v => v !== null);
    const bottom = Math.max(0, Math.floor(10 * Math.min(...values)) / 10);
    const right = Math.max(...lines.flatMap(([name]) => sweep[name].map(p => p.drop_share)), 1e-6);
    const fx = v => P + (SW - 2 * P) * Math.min(v, right) / right;
    const fy = v => H - P - (H - 2 * P) * (v - bottom) / Math.max(1 - bottom, 1e-6);
    el("rect", {x: P, y: P, width: SW - 2 * P, height: H - 2 * P, fill: "none", stroke: "#ccc"}, svg);
    lines.forEach(([name, key, colour, dash, label], i) => {
      const pts = [...sweep[name]].sort((a, b) => a.drop_share - b.drop_share).filter(p => p.mean[key] !== null);
      el("polyline", {points: pts.map(p => `${fx(p.drop_share)},${fy(p.mean[key])}`).join(" "), fill: "none",
                      stroke: colour, "stroke-dasharray": dash}, svg);
      el("text", {x: P + 58 * i, y: P - 2, "font-size": 9, fill: colour}, svg).textContent = label;
    });
    const xTitle = `share dropped (0-${(100 * right).toFixed(0)}%)`;
    el("text", {x: SW / 2 - 40, y: H - 6, "font-size": 10}, svg).textContent = xTitle;
    el("text", {x: 2, y: H - 6, "font-size": 9}, svg).textContent = `y: ${(100 * bottom).toFixed(0)}-100%`;
    const mark = el("line", {y1: P, y2: H - P, stroke: "black", "stroke-dasharray": "4 3"}, svg);
    const dot = el("circle", {r: 5, fill: "#4c78a8"}, svg);
    return (share, accuracy) => {
      mark.setAttribute("x1", fx(share)); mark.setAttribute("x2", fx(share));
      const shown = accuracy !== null && accuracy !== undefined;
      dot.setAttribute("visibility", shown ? "visible" : "hidden");
      if (shown) { dot.setAttribute("cx", fx(share)); dot.setAttribute("cy", fy(accuracy)); }
    };
  }

  // the example pool: kept and dropped at this threshold, green ring right decision, red wrong
  const pools = root.querySelector(".tv-pools");
  function poolRow(title) {
    const head = document.createElement("p"); pools.appendChild(head);
    const grid = document.createElement("div"); grid.className = "tv-grid"; pools.appendChild(grid);
    return [head, grid, title];
  }
  const rows = [poolRow("Kept"), poolRow("Dropped")];
  const tiles = data.pool.map(item => {
    const tile = document.createElement("div"); tile.className = "tv-tile";
    const caption = `${item.poisoned ? "poison" : "clean"} ${item.score.toFixed(4)}`;
    tile.innerHTML = `<img src="${item.src}" alt=""><div>${caption}</div>`;
    return {tile, item};
  });

  let current = null;  // the exact threshold drawn (a follower's may lie between the range input's steps)
  function render(t) {
    current = t;
    const s = compute(t);
    setText(valueText, t.toFixed(5));
    setText(metricValue.kept, int(s.kept));
    setText(metricValue.dropped, int(s.dropped_clean + s.dropped_poisoned));
    setText(metricValue.precision, s.precision.toFixed(3));
    setText(metricValue.recall, s.recall.toFixed(3));
    setText(metricValue.f1, s.f1.toFixed(3));
    for (const k of Object.keys(cells)) setText(cells[k], int(s[k]));
    line.setAttribute("x1", sx(t)); line.setAttribute("x2", sx(t));
    rocDot(s.fpr, s.tpr); prDot(s.recall, s.precision);
    if (sweepMark) sweepMark(s.drop_share, s.accuracy.clean_acc);
    if (sweep) {
      const a = s.accuracy;
      const seeds = `mean of ${a.n_seeds} seed${a.n_seeds === 1 ? "" : "s"}`;
      const how = a.where === "not measured"
        ? "not measured at this threshold (outside the measured thresholds)"
        : a.where === "measured" ? `measured at this threshold, ${seeds}`
        : `interpolated between measured points, ${seeds}`;
      setText(studentText.how, how);
      studentText.how.style.fontWeight = a.where === "not measured" ? "bold" : "normal";
      for (const k of METRICS) setText(studentText[k], pct(a[k]));
      setText(studentText.share, (100 * s.drop_share).toFixed(1));
      setText(studentText.controls, ["random", "oracle"].filter(k => s[k]).map(k =>
        `${k === "random" ? "at random" : "poisons first (oracle)"}: clean ${pct(s[k].clean_acc)}`).join(" / "));
    }
    for (const [i, row] of rows.entries()) {
      const [head, grid, title] = row;
      const dropped = i === 1;
      const chosen = tiles.filter(({item}) => (item.score > t) === dropped);
      const shown = chosen.slice(0, 12);
      const signature = chosen.length + ":" + shown.map(({item}) => item.score).join(",");
      if (row.signature === signature) continue;  // the same images: nothing to lay out again
      row.signature = signature;
      head.innerHTML = `<b>${title}</b>: ${chosen.length} of the ${tiles.length} example images` +
        (chosen.length > 12 ? "; the first 12 shown" : "") + " (green ring: right decision, red: wrong)";
      grid.replaceChildren(...shown.map(({tile, item}) => {
        tile.firstChild.style.borderColor = item.poisoned === dropped ? "#00aa00" : "#dc0000";
        return tile;
      }));
    }
    return s;
  }

  // side by side: the leader announces the share it drops; a follower moves to the threshold dropping that share
  const all = new Float32Array(n); all.set(clean); all.set(poisoned, nClean); all.sort();
  function thresholdForShare(share) {  // core.experiments.sweep.dropped_at: the highest kept score
    const count = Math.min(Math.round(share * n), n - 1);
    return Math.min(Math.max(all[n - 1 - count], data.low), data.high);
  }
  const follow = event => { const t = thresholdForShare(event.detail.share); slider.value = t; render(t); };
  if (data.follows) window.addEventListener("dae-threshold-share", follow);

  const timings = window.__thresholdTimings = window.__thresholdTimings || {render: [], frame: [], values: []};
  slider.addEventListener("input", event => {
    const t = parseFloat(slider.value);
    const s = render(t);
    if (data.leads) window.dispatchEvent(new CustomEvent("dae-threshold-share", {detail: {share: s.drop_share}}));
    const after = performance.now();
    if (!data.follows) {
      timings.render.push(after - event.timeStamp);
      timings.values.push(t);
      // after the next frame is painted: a task queued from the frame's callback runs once it is on screen
      requestAnimationFrame(() => setTimeout(() => timings.frame.push(performance.now() - event.timeStamp), 0));
    }
  });
  // the value goes to the server once the user stops: a burst of key presses (each one a "change") is one rerun
  let release = null;
  slider.addEventListener("change", () => {
    clearTimeout(release);
    release = setTimeout(() => setStateValue("threshold", parseFloat(slider.value)), RELEASE_AFTER_MS);
  });
  const bytes = JSON.stringify(data).length;
  const api = {compute, render, slider, root, thresholdForShare, current: () => current, bytes};
  if (data.follows) window.__thresholdFollower = api; else window.__thresholdView = api;
  if (!data.follows) window.__thresholdReadyMs = performance.now() - mountedAt;  // decode + first drawing
  const s = render(parseFloat(slider.value));
  const announce = () => window.dispatchEvent(new CustomEvent("dae-threshold-share", {detail: {share: s.drop_share}}));
  if (data.leads) setTimeout(announce, 50);  // the follower mounts after the leader
  return () => window.removeEventListener("dae-threshold-share", follow);
}
"""

_COMPONENT = st.components.v2.component("dae_distill_threshold_view", html=HTML, css=CSS, js=JS)


def _png(pixels: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _floats(values: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(values, dtype="<f4").tobytes()).decode()


def view_data(scores, mask, curves, hist, sweep, pool, pool_scores, low, high, label, notes) -> dict:
    """The plain data the instant view computes from (no value of it changes while the pointer moves)."""
    clean, poisoned = np.sort(scores[~mask]), np.sort(scores[mask])
    if not (np.array_equal(clean.astype(np.float32), clean) and np.array_equal(poisoned.astype(np.float32), poisoned)):
        raise ValueError("the instant view needs float32 scores (runs store them so): use the server view")
    data = {
        "clean": _floats(clean),
        "poisoned": _floats(poisoned),
        "low": low,
        "high": high,
        "step": (high - low) / 1000,
        "tolerance": (high - low) / 2000,
        "label": label,
        "auroc": float(curves["auroc"]),
        "hist": {key: np.asarray(hist[key]).tolist() for key in ("edges", "clean", "poisoned")},
        "roc": [np.asarray(axis).tolist() for axis in curves["roc_shown"]],
        "pr": [np.asarray(axis).tolist() for axis in curves["pr_shown"]],
        "pool": [
            {"src": _png(pixels), "score": float(score), "poisoned": bool(poisoned_flag)}
            for pixels, score, poisoned_flag in zip(pool["delivered"], pool_scores, pool["is_poisoned"])
        ],
        "sweep": None,
        "sweep_note": notes.get("sweep", ""),
        "no_sweep": notes.get("no_sweep", ""),
    }
    if sweep:
        curves_of = sweep["curves"]
        keep = ("threshold", "drop_share", "target_share", "n_seeds")

        def points(name: str, order: str) -> list[dict]:
            found = sorted(curves_of[name], key=lambda point: point[order])
            return [{**{k: point[k] for k in keep}, "mean": {k: point["mean"][k] for k in METRICS}} for point in found]

        data["sweep"] = {"detector": points("detector", "threshold")}
        for name in ("random", "oracle"):
            if name in curves_of:
                data["sweep"][name] = points(name, "drop_share")
    return data


@st.cache_data(max_entries=8, show_spinner="Preparing the instant view (once per run and score)...")
def instant_data(directory: str, score: str, stamp=None) -> dict:
    """view_data for a run and score (stamp: the run's sweep.json time, so new points are sent)."""
    run = cached_run(directory)
    scores, mask = cached_scores(directory, score)
    pool = cached_example_pool(directory)
    sweep = run.sweep if score == "dae" else None
    note = ""
    if sweep:
        config = sweep["config"]
        note = (
            f"run {shown(directory)}, sweep of {len(sweep['curves']['detector'])} thresholds, {config['steps']:,} "
            f"optimiser steps per model, clean on {config['n_test']:,} test images"
        )
    notes = {
        "sweep": note,
        "no_sweep": "No threshold sweep for this score on this run: the student's accuracy is measured by the sweep or "
        "by *Train at this threshold*.",
    }
    low, high = slider_range(directory, score)
    unit = "per-image MSE" if score == "dae" else "score"
    return view_data(
        scores,
        mask,
        cached_curves(directory, score),
        score_histogram(directory, score),
        sweep,
        pool,
        scores[pool["index"]],
        low,
        high,
        f"{filter_label(score)} ({unit})",
        notes,
    )


def instant_view(data: dict, value: float, key: str, on_release) -> None:
    """Mount the view at `value`; on_release(threshold) when a drag ends (the server then stores it)."""
    result = _COMPONENT(data={**data, "value": value}, key=key, on_threshold_change=lambda: None)
    released = getattr(result, "threshold", None)
    if released is not None and released != st.session_state.get(f"{key}-released"):
        st.session_state[f"{key}-released"] = released
        on_release(float(released))
