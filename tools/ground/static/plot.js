// A small time-series plot on a <canvas>: a line of (time, value) samples over a sliding
// window, value axis with round ticks, the dictionary's limits as dashed red lines.
// Written for the orbithil console (no plotting library, nothing loaded from outside).
"use strict";

class TimePlot {
  // canvas: the element; options: {windowS, low, high, units}
  constructor(canvas, options = {}) {
    this.canvas = canvas;
    this.windowS = options.windowS || 300;
    this.low = options.low ?? null;
    this.high = options.high ?? null;
    this.units = options.units || "";
    this.t = [];  // seconds since the epoch (reception time)
    this.v = [];
    this.maxPoints = 20000;
    this.pending = false;
  }

  setData(times, values) {
    this.t = times.slice();
    this.v = values.slice();
    this.request();
  }

  push(time, value) {
    if (this.t.length && time < this.t[this.t.length - 1]) return;  // out of order: skip
    this.t.push(time);
    this.v.push(value);
    if (this.t.length > this.maxPoints) {
      const drop = this.t.length - this.maxPoints;
      this.t.splice(0, drop);
      this.v.splice(0, drop);
    }
    this.request();
  }

  setWindow(seconds) {
    this.windowS = seconds;
    this.request();
  }

  request() {  // draw once per animation frame, however many samples came
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => { this.pending = false; this.draw(); });
  }

  static niceStep(span, count) {  // 1, 2 or 5 times a power of ten
    const raw = span / Math.max(1, count);
    const power = Math.pow(10, Math.floor(Math.log10(raw)));
    const unit = raw / power;
    return (unit < 1.5 ? 1 : unit < 3.5 ? 2 : unit < 7.5 ? 5 : 10) * power;
  }

  static format(value, step) {
    const digits = Math.max(0, Math.min(6, -Math.floor(Math.log10(step || 1))));
    return value.toFixed(digits);
  }

  draw() {
    const canvas = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth, height = canvas.clientHeight;
    if (!width || !height) return;
    if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
    }
    const g = canvas.getContext("2d");
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, width, height);
    const left = 52, right = 8, top = 8, bottom = 18;
    const plotW = width - left - right, plotH = height - top - bottom;
    const tEnd = Math.max(Date.now() / 1000, this.t.length ? this.t[this.t.length - 1] : 0);
    const tStart = tEnd - this.windowS;

    // the samples in the window, and their range (limits included when near)
    let first = this.t.length;
    for (let i = this.t.length - 1; i >= 0 && this.t[i] >= tStart; i--) first = i;
    if (first > 0) first -= 1;  // one before the window: the line enters from the edge
    let lo = Infinity, hi = -Infinity;
    for (let i = first; i < this.t.length; i++) {
      const v = this.v[i];
      if (v === null || !isFinite(v)) continue;
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    g.font = "11px system-ui, sans-serif";
    g.fillStyle = "#667085";
    if (lo === Infinity) {
      g.fillText("no samples in this window", left + 8, top + plotH / 2);
      return;
    }
    for (const limit of [this.low, this.high]) {
      if (limit !== null && isFinite(limit)) {
        const span = Math.max(hi - lo, Math.abs(hi) * 0.1, 1e-9);
        if (Math.abs(limit - lo) < 2 * span || Math.abs(limit - hi) < 2 * span) {
          lo = Math.min(lo, limit);
          hi = Math.max(hi, limit);
        }
      }
    }
    if (hi - lo < 1e-12) { const pad = Math.abs(hi) * 0.05 || 1; lo -= pad; hi += pad; }
    const step = TimePlot.niceStep(hi - lo, 4);
    lo = Math.floor(lo / step) * step;
    hi = Math.ceil(hi / step) * step;
    const x = (t) => left + ((t - tStart) / this.windowS) * plotW;
    const y = (v) => top + plotH - ((v - lo) / (hi - lo)) * plotH;

    // grid and value ticks
    g.strokeStyle = "#eef0f3";
    g.lineWidth = 1;
    g.textAlign = "right";
    g.textBaseline = "middle";
    for (let v = lo; v <= hi + step / 2; v += step) {
      const yy = Math.round(y(v)) + 0.5;
      g.beginPath(); g.moveTo(left, yy); g.lineTo(left + plotW, yy); g.stroke();
      g.fillText(TimePlot.format(v, step), left - 4, yy);
    }
    // time ticks: seconds ago
    g.textAlign = "center";
    g.textBaseline = "top";
    const steps = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400];
    const tStep = steps.find((s) => this.windowS / s <= 6) || 86400;
    for (let ago = 0; ago <= this.windowS; ago += tStep) {
      const xx = x(tEnd - ago);
      const label = ago === 0 ? "now" : ago % 3600 === 0 ? `-${ago / 3600}h`
        : ago % 60 === 0 ? `-${ago / 60}m` : `-${ago}s`;
      g.textAlign = ago === this.windowS ? "left" : ago === 0 ? "right" : "center";
      g.fillText(label, xx, top + plotH + 4);
    }
    // limits
    g.setLineDash([4, 3]);
    g.strokeStyle = "#c62828";
    for (const limit of [this.low, this.high]) {
      if (limit !== null && isFinite(limit) && limit >= lo && limit <= hi) {
        const yy = Math.round(y(limit)) + 0.5;
        g.beginPath(); g.moveTo(left, yy); g.lineTo(left + plotW, yy); g.stroke();
      }
    }
    g.setLineDash([]);
    // the line (a gap where a value is missing)
    g.save();
    g.beginPath();
    g.rect(left, top, plotW, plotH);
    g.clip();
    g.strokeStyle = "#1f5fbf";
    g.lineWidth = 1.5;
    g.beginPath();
    let drawing = false;
    for (let i = first; i < this.t.length; i++) {
      const v = this.v[i];
      if (v === null || !isFinite(v)) { drawing = false; continue; }
      const xx = x(this.t[i]), yy = y(v);
      if (drawing) g.lineTo(xx, yy); else g.moveTo(xx, yy);
      drawing = true;
    }
    g.stroke();
    g.restore();
    g.strokeStyle = "#d9dde3";
    g.strokeRect(left + 0.5, top + 0.5, plotW, plotH);
  }
}

window.TimePlot = TimePlot;
