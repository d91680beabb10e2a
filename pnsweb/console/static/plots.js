// Throughput, latency percentiles and errors per PTS over the last ten minutes, from the
// daemon's rolling window (5 s buckets), drawn with uPlot and updated every 5 s.
import { api, h, table, duration, showError } from "./lib.js";

const COLOURS = ["#2e5bda", "#1f8a4c", "#c0392b", "#b9770e", "#7d3c98", "#138d90", "#5d6d7e",
                 "#d35400"];
const PERCENTILES = ["p50", "p90", "p99"];

function chart(title, names, where, unit) {
  const series = [{}].concat(names.map((name, i) => ({
    label: name, stroke: COLOURS[i % COLOURS.length], width: 2, spanGaps: false,
    points: { show: true, size: 5 },           // a lone bucket shows as a dot
    value: (_u, v) => (v === null || v === undefined ? "—" : `${+v.toPrecision(3)} ${unit}`),
  })));
  const width = Math.max(320, Math.min(1150, where.clientWidth || 900));
  return new uPlot({
    title, width, height: 220, series,
    scales: { y: { range: (_u, _min, max) => [0, max > 0 ? max * 1.1 : 1] } },
    axes: [{}, { label: unit, size: 60 }],
  }, [[], ...names.map(() => [])], where);
}

export function render(main, scope) {
  const pick = h("select", { id: "latency-pts" });
  const boxes = { runs: h("div", { id: "plot-throughput" }),
                  latency: h("div", { id: "plot-latency" }), errors: h("div", { id: "plot-errors" }) };
  const totals = h("div", { id: "plot-totals" });
  const status = h("div", {});
  main.append(h("h1", {}, "Plots"), h("p", { class: "muted" },
    "Runs finished in the last ten minutes, in 5 s buckets; latency from submission to finish."),
    status, boxes.runs, h("div", { class: "row" }, h("label", {}, "Latency of", pick)),
    boxes.latency, boxes.errors, h("h2", {}, "Totals over the window"), totals);
  let shape = "";
  let plots = null;
  const draw = async () => {
    if (typeof uPlot === "undefined") return;
    let data;
    try { data = await api("/stats"); } catch (error) { showError(status, error); return; }
    status.replaceChildren();
    const names = Object.keys(data.pts);
    if ([...pick.options].map((o) => o.value).join(",") !== names.join(",")) {
      const kept = pick.value;
      pick.replaceChildren(...names.map((n) => h("option", {}, n)));
      if (names.includes(kept)) pick.value = kept;
    }
    const chosen = pick.value;
    const key = `${names.join(",")}|${chosen}`;
    if (key !== shape) {
      shape = key;
      Object.values(boxes).forEach((box) => box.replaceChildren());
      plots = names.length ? {
        runs: chart("Throughput (runs/s)", names, boxes.runs, "/s"),
        latency: chart(`Latency of ${chosen}`, PERCENTILES, boxes.latency, "ms"),
        errors: chart("Errors (failed runs/s)", names, boxes.errors, "/s"),
      } : null;
      if (!plots) boxes.runs.replaceChildren(h("p", { class: "muted" }, "No runs yet."));
    }
    if (!plots) { totals.replaceChildren(); return; }
    const times = data.times;
    const each = (field) => names.map((n) => {
      const p = data.pts[n];
      return p.ok.map((ok, i) => (field === "runs" ? ok + p.failed[i] + p.dismissed[i]
        : p.failed[i]) / data.step);
    });
    plots.runs.setData([times, ...each("runs")]);
    plots.errors.setData([times, ...each("errors")]);
    plots.latency.setData([times, ...PERCENTILES.map((q) => data.pts[chosen][q].map(
      (v) => (v === null ? null : v * 1000)))]);
    totals.replaceChildren(table(["PTS", "ok", "failed", "dismissed", "p50", "p90", "p99"],
      names.map((n) => {
        const t = data.pts[n].total;
        return h("tr", { "data-pts": n }, h("td", {}, n), h("td", {}, t.ok),
          h("td", {}, t.failed), h("td", {}, t.dismissed), h("td", {}, duration(t.p50)),
          h("td", {}, duration(t.p90)), h("td", {}, duration(t.p99)));
      })));
  };
  pick.addEventListener("change", () => { shape = ""; draw(); });
  scope.every(5, draw);
  scope.onStop(() => { if (plots) Object.values(plots).forEach((p) => p.destroy()); });
}
