// Small SVG line charts for bucketed telemetry: the average as a line, min..max as a band.
// No library and no network: the console must run on a machine without internet.
"use strict";

const VigilChart = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const W = 600, H = 160, PAD_L = 48, PAD_R = 8, PAD_T = 8, PAD_B = 22;

  function el(name, attrs) {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    return node;
  }

  function fmt(v) {
    const a = Math.abs(v);
    if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
    if (a >= 1e4) return (v / 1e3).toFixed(0) + "k";
    if (a >= 100) return v.toFixed(0);
    if (a >= 1) return v.toFixed(1);
    return v.toFixed(2);
  }

  function hhmm(ms) {
    const d = new Date(ms);
    return d.toISOString().slice(11, 16);
  }

  // series: {start, end, bucket_s, buckets: [{ts, avg, min, max}]}
  function render(container, series) {
    container.textContent = "";
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none",
                            role: "img", "aria-label": series.metric });
    const t0 = Date.parse(series.start), t1 = Date.parse(series.end);
    const pts = series.buckets.map(b => ({ t: Date.parse(b.ts), avg: b.avg, min: b.min, max: b.max }));
    let lo = Math.min(...pts.map(p => p.min)), hi = Math.max(...pts.map(p => p.max));
    if (!pts.length) { lo = 0; hi = 1; }
    if (lo === hi) { lo -= 1; hi += 1; }
    const x = t => PAD_L + (W - PAD_L - PAD_R) * (t - t0) / Math.max(1, t1 - t0);
    const y = v => PAD_T + (H - PAD_T - PAD_B) * (1 - (v - lo) / (hi - lo));

    svg.appendChild(el("rect", { x: PAD_L, y: PAD_T, width: W - PAD_L - PAD_R,
                                 height: H - PAD_T - PAD_B, fill: "#fafbfc", stroke: "#dde1e7" }));
    for (let i = 0; i <= 4; i++) {
      const v = lo + (hi - lo) * i / 4, yy = y(v);
      svg.appendChild(el("line", { x1: PAD_L, x2: W - PAD_R, y1: yy, y2: yy, stroke: "#eef0f3" }));
      const label = el("text", { x: PAD_L - 4, y: yy + 4, "text-anchor": "end",
                                 "font-size": 10, fill: "#6b7280" });
      label.textContent = fmt(v);
      svg.appendChild(label);
    }
    for (let i = 0; i <= 4; i++) {
      const t = t0 + (t1 - t0) * i / 4;
      const anchor = i === 0 ? "start" : i === 4 ? "end" : "middle";
      const label = el("text", { x: x(t), y: H - 6, "text-anchor": anchor,
                                 "font-size": 10, fill: "#6b7280" });
      label.textContent = hhmm(t);
      svg.appendChild(label);
    }
    if (pts.length) {
      // a gap in the data stays a gap: the line is broken where buckets are missing (rule E1)
      // a gap is more than 3 usual spacings (3 missed polls) and more than 1.5 buckets wide
      const steps = pts.slice(1).map((p, i) => p.t - pts[i].t).sort((a, b) => a - b);
      const usual = steps.length ? steps[Math.floor(steps.length / 2)] : 0;
      const gap = Math.max(series.bucket_s * 1000 * 1.5, usual * 3);
      let band = "", line = "";
      let run = [];
      const flush = () => {
        if (!run.length) return;
        band += "M" + run.map(p => `${x(p.t)},${y(p.max)}`).join("L") +
                "L" + run.slice().reverse().map(p => `${x(p.t)},${y(p.min)}`).join("L") + "Z";
        line += "M" + run.map(p => `${x(p.t)},${y(p.avg)}`).join("L");
        run = [];
      };
      pts.forEach((p, i) => {
        if (i && p.t - pts[i - 1].t > gap) flush();
        run.push(p);
      });
      flush();
      svg.appendChild(el("path", { d: band, fill: "rgba(31,95,191,.15)", stroke: "none" }));
      svg.appendChild(el("path", { d: line, fill: "none", stroke: "#1f5fbf", "stroke-width": 1.5,
                                   "vector-effect": "non-scaling-stroke" }));
      if (pts.length === 1) {
        svg.appendChild(el("circle", { cx: x(pts[0].t), cy: y(pts[0].avg), r: 3, fill: "#1f5fbf" }));
      }
    } else {
      const empty = el("text", { x: W / 2, y: H / 2, "text-anchor": "middle", fill: "#6b7280" });
      empty.textContent = "no data in this range";
      svg.appendChild(empty);
    }
    container.appendChild(svg);
  }

  return { render };
})();
