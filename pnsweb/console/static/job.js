// One job: live status, progress and log lines over Server-Sent Events (a reconnecting
// EventSource resumes after the last event id it saw), its input, its outputs (JSON shown,
// images shown, other binaries downloadable), cancel and delete.
import { api, h, json, when, bytes, showError } from "./lib.js";

const FINAL = new Set(["successful", "failed", "dismissed"]);

function outputView(jobId, data) {
  if (!data.ready) return h("p", { class: "muted" }, "No result yet.");
  if (data.too_large) {
    return h("p", {}, `The result (${bytes(data.size)}) is too large to show here: read it ` +
      `with pnsd jobs result ${jobId}, or GET /v1/jobs/${jobId}/results.`);
  }
  if (data.error) return h("p", { class: "error" }, `${data.error.code}: ${data.error.message}`);
  const items = data.outputs.map((o) => {
    const href = `/console/api/jobs/${jobId}/outputs/${o.index}`;
    return h("div", { class: "output", "data-output": o.name },
      h("h3", {}, `${o.name} `, h("span", { class: "muted" }, `${o.type}, ${bytes(o.size)}`)),
      o.type.startsWith("image/") ? h("img", { src: href, alt: o.name })
        : h("a", { href, download: o.name }, "Download"));
  });
  return h("div", { class: "outputs" }, json(data.result), items);
}

export async function render(main, scope, id) {
  const head = h("div", {});
  main.append(h("h1", {}, `Job ${id}`), head);
  let data;
  try { data = await api(`/jobs/${encodeURIComponent(id)}`); } catch (error) {
    showError(head, error); return;
  }
  const job = data.job;
  const status = h("span", { id: "job-status", class: `status-${job.status}` }, job.status);
  const progress = h("progress", { id: "job-progress", max: 100, value: job.progress });
  const percent = h("span", { id: "job-percent" }, `${job.progress} %`);
  const message = h("span", { id: "job-message", class: "muted" }, job.message || "");
  const log = h("pre", { id: "log" }, "");
  const outputs = h("div", { id: "outputs" }, h("p", { class: "muted" }, "No result yet."));
  const actionError = h("div", { class: "field-error", id: "job-error" });
  const act = async (path, method) => {
    try { await api(path, { method }); } catch (error) { actionError.textContent = error.message; }
  };
  const cancel = h("button", { id: "cancel", onclick: () => act(`/jobs/${id}/cancel`, "POST") },
    "Cancel");
  const remove = h("button", { class: "danger", id: "delete", onclick: async () => {
    if (!confirm("Delete this job and its results?")) return;
    await act(`/jobs/${id}`, "DELETE");
    location.hash = "#/jobs";
  } }, "Delete");
  head.replaceChildren(h("div", { class: "card" },
    h("div", { class: "row" }, h("span", {}, `PTS ${job.pts} · `, status,
      ` · owner ${job.owner || "(operator)"} · created ${when(job.created)}`), cancel, remove),
    progress, h("div", {}, percent, " ", message), actionError));
  main.append(h("h2", {}, "Log"), log, h("h2", {}, "Input"),
    "input" in data ? json(data.input) : h("p", { class: "muted" }, data.input_error),
    h("h2", {}, "Outputs"), outputs);

  const show = (event) => {
    if (event.progress !== undefined && event.progress !== null) {
      progress.value = event.progress;
      percent.textContent = `${event.progress} %`;
    }
    if (event.message !== undefined) message.textContent = event.message || "";
    if (event.status) {
      status.textContent = event.status;
      status.className = `status-${event.status}`;
    }
  };
  const finished = async () => {
    cancel.disabled = true;
    try {
      outputs.replaceChildren(outputView(id, await api(`/jobs/${id}/outputs`)));
    } catch (error) { showError(outputs, error); }
  };
  if (FINAL.has(job.status)) { cancel.disabled = true; }
  const source = new EventSource(`/console/api/jobs/${encodeURIComponent(id)}/events`);
  scope.onStop(() => source.close());
  source.addEventListener("progress", (e) => show(JSON.parse(e.data)));
  source.addEventListener("log", (e) => { log.textContent += `${JSON.parse(e.data).line}\n`; });
  source.addEventListener("status", (e) => {
    const event = JSON.parse(e.data);
    show(event);
    if (FINAL.has(event.status)) { source.close(); finished(); }
  });
  source.addEventListener("error", (e) => {
    if (e.data) actionError.textContent = JSON.parse(e.data).message;   // the daemon's error
  });
}
