// Every PTS with its state, load and workers; one PTS with its spec, declared interface and
// deploy history.
import { api, h, table, json, when, duration, showError } from "./lib.js";

function stateCell(info) {
  return h("span", { class: `state-${info.state}` }, info.state,
    info.reason ? h("span", { class: "muted" }, ` (${info.reason})`) : "");
}

function workerLine(w) {
  const python = (w.python || "").split(" ")[0];
  const up = w.since ? duration(Date.now() / 1000 - w.since) : "starting";
  const doing = w.busy ? "busy" : "idle";
  // where it runs: "local" (started by the daemon) or a remote worker's host name
  const where = !w.where || w.where === "local" ? "local" : `on ${w.where}`;
  return h("div", { class: `muted worker worker-${doing}`, "data-pid": w.pid ?? "",
    "data-where": w.where || "local" },
    `pid ${w.pid ?? "—"} · ${where} · ${doing}${python ? ` · Python ${python}` : ""} · up ${up} · ` +
    `${w.served} served${w.restarts ? ` · ${w.restarts} restarts` : ""}`);
}

function workersCell(info) {
  if (info.workers === undefined) return h("span", { class: "muted" }, "in the daemon");
  const idle = Math.max(0, (info.ready || 0) - (info.busy || 0));
  return h("span", {}, `${info.alive}/${info.workers} alive, ${info.busy} busy, ${idle} idle`,
    info.restarts ? `, ${info.restarts} restarts` : "", (info.each || []).map(workerLine));
}

export function render(main, scope) {
  const body = h("div", {});
  main.append(h("h1", {}, "PTS"), body);
  scope.every(2, async () => {
    try {
      const data = await api("/pts");
      body.replaceChildren(table(
        ["name", "mode", "version", "generation", "state", "workers", "running", "queued"],
        data.pts.map((p) => h("tr", { "data-pts": p.name },
          h("td", {}, h("a", { href: `#/pts/${encodeURIComponent(p.name)}` }, p.name),
            p.description ? h("div", { class: "muted" }, p.description) : ""),
          h("td", {}, p.mode || "—"), h("td", {}, p.version || "—"),
          h("td", {}, p.generation ?? "—"), h("td", {}, stateCell(p)),
          h("td", {}, workersCell(p)), h("td", {}, p.running ?? 0),
          h("td", {}, `${p.queued ?? 0} of ${p.queue ?? "—"}`)))));
    } catch (error) { showError(body, error); }
  });
}

async function undeploy(name, where) {
  if (!confirm(`Undeploy ${name}? Its running jobs drain first.`)) return;
  try {
    await api(`/pts/${encodeURIComponent(name)}`, { method: "DELETE" });
    location.hash = "#/pts";
  } catch (error) { showError(where, error); }
}

export async function renderOne(main, scope, name) {
  const status = h("div", {});
  main.append(h("h1", {}, `PTS ${name}`), status);
  let data;
  try { data = await api(`/pts/${encodeURIComponent(name)}`); } catch (error) {
    showError(status, error); return;
  }
  const interfaceBox = h("div", {}, h("p", { class: "muted" }, "…"));
  fetch(`/v1/processes/${encodeURIComponent(name)}`).then((r) => r.json()).then((d) => {
    interfaceBox.replaceChildren(json({ inputs: d.inputs, outputs: d.outputs }));
  }).catch(() => interfaceBox.replaceChildren(json({ inputs: data.spec.inputs,
                                                     outputs: data.spec.outputs })));
  const actions = h("div", { class: "row" },
    h("a", { href: `#/steer/${encodeURIComponent(name)}` }, h("button", {}, "Replace…")),
    h("button", { class: "danger", onclick: () => undeploy(name, status) }, "Undeploy"));
  const history = table(["when", "action", "who", "from", "to", "outcome", "error"],
    data.history.map((e) => h("tr", {}, h("td", {}, when(e.at)), h("td", {}, e.action),
      h("td", {}, e.who), h("td", {}, e.old_version ?? "—"), h("td", {}, e.new_version ?? "—"),
      h("td", { class: e.outcome === "ok" ? "up" : "down" }, e.outcome),
      h("td", {}, e.error || ""))));
  main.append(actions, h("h2", {}, "State"), json(data.state),
    h("h2", {}, "Declared interface"), interfaceBox, h("h2", {}, "Spec"), json(data.spec),
    h("h2", {}, "Deploy history"), history);
  scope.every(2, async () => {
    const fresh = await api(`/pts/${encodeURIComponent(name)}`);
    main.querySelector("pre.json").textContent = JSON.stringify(fresh.state, null, 2);
  });
}
