// The job list (filter by PTS, status, age and, for administrators, owner; paged, newest
// first, refreshed every 2 s) and a form to start a job.
import { api, h, table, when, showError } from "./lib.js";

const STATUSES = ["", "accepted", "running", "successful", "failed", "dismissed"];
const PAGE = 25;
// "since" choices: seconds back from now ("" = all time), sent as an epoch-seconds bound.
const WINDOWS = [["", "all"], ["900", "last 15 min"], ["3600", "last hour"],
                 ["86400", "last day"]];

async function processNames() {
  const reply = await fetch("/v1/processes");       // public: every user may see the list
  const data = await reply.json();
  return (data.processes || []).map((p) => p.id).sort();
}

function runForm(names) {
  const pts = h("select", { name: "pts", id: "run-pts" }, names.map((n) => h("option", {}, n)));
  const input = h("textarea", { name: "input", id: "run-input", rows: 3 }, "{}");
  const error = h("div", { class: "field-error", id: "run-error" });
  const form = h("form", { class: "card", id: "run" },
    h("div", { class: "row" }, h("label", {}, "PTS", pts),
      h("label", { style: { flex: "1" } }, "Input (JSON)", input),
      h("button", { class: "primary", type: "submit" }, "Run")), error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    let value;
    try { value = JSON.parse(input.value || "null"); } catch (failure) {
      error.textContent = `Input: not JSON: ${failure.message}`; return;
    }
    try {
      const reply = await api("/jobs", { method: "POST", body: { pts: pts.value, input: value } });
      location.hash = `#/jobs/${reply.job.id}`;
    } catch (failure) { error.textContent = failure.message; }
  });
  return form;
}

export function render(main, scope, me) {
  const filters = { pts: "", status: "", owner: "", window: "", offset: 0 };
  const pts = h("input", { name: "pts", placeholder: "any" });
  const status = h("select", { name: "status" },
    STATUSES.map((s) => h("option", { value: s }, s || "any")));
  const owner = h("input", { name: "owner", placeholder: "anyone" });
  const since = h("select", { name: "since" },
    WINDOWS.map(([value, label]) => h("option", { value }, label)));
  const list = h("div", { id: "jobs" });
  const pager = h("div", { class: "pager" });
  const refresh = async () => {
    const query = new URLSearchParams({ limit: PAGE, offset: filters.offset });
    for (const key of ["pts", "status", "owner"]) if (filters[key]) query.set(key, filters[key]);
    if (filters.window) query.set("since", String(Math.floor(Date.now() / 1000) - filters.window));
    try {
      const data = await api(`/jobs?${query}`);
      list.replaceChildren(table(["job", "PTS", "status", "progress", "owner", "created",
                                  "finished"],
        data.jobs.map((j) => h("tr", { "data-job": j.id },
          h("td", {}, h("a", { href: `#/jobs/${j.id}` }, j.id.slice(0, 12))),
          h("td", {}, j.pts), h("td", { class: `status-${j.status}` }, j.status),
          h("td", {}, `${j.progress} %`), h("td", {}, j.owner || "(operator)"),
          h("td", {}, when(j.created)), h("td", {}, when(j.finished))))));
      const last = Math.min(data.total, filters.offset + data.jobs.length);
      pager.replaceChildren(
        h("button", { disabled: filters.offset === 0, onclick: () => move(-PAGE) }, "Newer"),
        h("span", {}, `${data.total ? filters.offset + 1 : 0}–${last} of ${data.total}`),
        h("button", { disabled: last >= data.total, onclick: () => move(PAGE) }, "Older"));
    } catch (error) { showError(list, error); }
  };
  const move = (delta) => { filters.offset = Math.max(0, filters.offset + delta); refresh(); };
  const changed = () => {
    Object.assign(filters, { pts: pts.value.trim(), status: status.value,
                             owner: owner.value.trim(), window: Number(since.value) || "",
                             offset: 0 });
    refresh();
  };
  [pts, owner].forEach((input) => input.addEventListener("change", changed));
  [status, since].forEach((select) => select.addEventListener("change", changed));
  const form = h("div", {});
  main.append(h("h1", {}, "Jobs"), form,
    h("div", { class: "row" }, h("label", {}, "PTS", pts), h("label", {}, "Status", status),
      h("label", {}, "Since", since),
      me.admin ? h("label", {}, "Owner", owner) : ""), list, pager);
  processNames().then((names) => form.replaceChildren(runForm(names)))
    .catch((error) => showError(form, error));
  scope.every(2, refresh);
}
