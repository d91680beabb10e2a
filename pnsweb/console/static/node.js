// The node: the link between pnsweb and pnsd, the daemon's version and uptime, the job
// store against its bound; one line per node. Refreshed every 2 s.
import { api, h, table, duration, bytes, showError } from "./lib.js";

function storeCell(store) {
  if (!store || !store.open) return h("span", { class: "down" }, "closed");
  const bound = store.bound;
  const share = bound ? Math.min(1, store.bytes / bound) : 0;
  return h("span", {},
    h("span", { class: "bar", title: `${Math.round(share * 100)} %` },
      h("span", { style: { width: `${(share * 100).toFixed(1)}%` } })),
    ` ${bytes(store.bytes)} of ${bound ? bytes(bound) : "unbounded"}`,
    store.write_errors ? h("span", { class: "error" }, ` · ${store.write_errors} write errors`)
      : "");
}

function nodeRow(node) {
  const link = node.link.up
    ? h("span", { class: "up" }, `up (${node.link.round_trip_ms} ms)`)
    : h("span", { class: "down" }, `down: ${node.link.reason}`);
  const daemon = node.daemon || {};
  const load = Object.values(node.pts || {}).reduce(
    (sum, p) => [sum[0] + p.running, sum[1] + p.queued], [0, 0]);
  return h("tr", { "data-node": node.name },
    h("td", {}, node.name), h("td", { class: "link" }, link),
    h("td", {}, daemon.version || "—"),
    h("td", { class: "uptime" }, duration(daemon.uptime)),
    h("td", {}, daemon.accepting === false ? h("span", { class: "down" }, "stopping")
      : daemon.accepting ? "yes" : "—"),
    h("td", {}, `${load[0]} running, ${load[1]} queued`),
    h("td", {}, node.link.up ? storeCell(node.store) : "—"));
}

export function render(main, scope) {
  const body = h("div", {});
  main.append(h("h1", {}, "Node"), body);
  scope.every(2, async () => {
    try {
      const data = await api("/node");
      body.replaceChildren(
        table(["node", "link from pnsweb", "version", "uptime", "accepting jobs", "load",
               "job store"], data.nodes.map(nodeRow)),
        h("p", { class: "muted" }, `pnsweb ${data.web.version}`));
    } catch (error) { showError(body, error); }
  });
}
