// Deploy or replace a PTS from a spec written as TOML or JSON: the daemon starts the new
// version, runs its init and self-test, and only then switches. Errors are shown next to the
// field (and the spec line) that caused them.
import { api, h } from "./lib.js";

const EXAMPLE = `[pts.hello-copy]
mode = "inproc"
entry = "pnsd.demo:echo"
version = "1"
selftest = {input = {x = 1}, expect = {x = 1}}
`;

function errorsByField(errors, text) {
  const lines = text.split("\n");
  return errors.map((e) => {
    const where = e.line ? `line ${e.line}: ${(lines[e.line - 1] || "").trim()}\n` : "";
    const stage = e.stage ? `${e.stage}: ` : "";
    return { field: e.field, text: `${where}${stage}${e.message}`, line: e.line };
  });
}

export async function render(main, scope, replacing) {
  const action = h("select", { name: "action", id: "steer-action" },
    h("option", { value: "deploy" }, "deploy a new PTS"),
    h("option", { value: "replace", selected: Boolean(replacing) }, "replace a PTS"));
  const name = h("input", { name: "name", id: "steer-name", value: replacing || "",
                            placeholder: "from the spec" });
  const format = h("select", { name: "format", id: "steer-format" },
    h("option", { value: "toml" }, "TOML"), h("option", { value: "json" }, "JSON"));
  const spec = h("textarea", { name: "spec", id: "steer-spec", rows: 14, spellcheck: "false" });
  spec.value = EXAMPLE;
  const errorOf = {};
  for (const field of ["action", "name", "format", "spec"]) {
    errorOf[field] = h("div", { class: "field-error", id: `error-${field}` });
  }
  const outcome = h("div", { id: "steer-outcome" });
  const submit = h("button", { class: "primary", type: "submit" }, "Deploy");
  const form = h("form", { class: "card", id: "steer" },
    h("div", { class: "row" }, h("label", {}, "Action", action, errorOf.action),
      h("label", {}, "Name", name, errorOf.name), h("label", {}, "Format", format,
        errorOf.format)),
    h("label", {}, "Spec: one [pts.NAME] table, or its keys as JSON", spec), errorOf.spec,
    h("div", { class: "row" }, submit), outcome);
  main.append(h("h1", {}, "Deploy"), form);
  if (replacing) {
    try {
      const current = await api(`/pts/${encodeURIComponent(replacing)}`);
      format.value = "json";
      const { name: _n, ...keys } = current.spec;
      for (const [k, v] of Object.entries(keys)) if (v === null) delete keys[k];
      spec.value = JSON.stringify(keys, null, 2);
    } catch (error) { errorOf.name.textContent = error.message; }
  }
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    Object.values(errorOf).forEach((e) => { e.textContent = ""; });
    outcome.replaceChildren(h("p", { class: "muted" }, "Starting, initialising, self-testing…"));
    submit.disabled = true;
    try {
      const reply = await api("/pts", { method: "POST", body: {
        action: action.value, name: name.value.trim() || null, format: format.value,
        text: spec.value } });
      const swap = reply.swap;
      outcome.replaceChildren(h("p", { class: "up", id: "steer-done" },
        `${swap.action} ${swap.name}: version ${swap.new_version ?? "(unnamed)"}, ` +
        `generation ${swap.generation}; init and self-test passed, it now serves.`));
    } catch (error) {
      outcome.replaceChildren();
      const errors = error.body && error.body.errors;
      if (!errors) { errorOf.spec.textContent = error.message; return; }
      for (const e of errorsByField(errors, spec.value)) {
        (errorOf[e.field] || errorOf.spec).textContent = e.text;
        if (e.field === "spec" && e.line) selectLine(spec, e.line);
      }
    } finally { submit.disabled = false; }
  });
}

function selectLine(textarea, line) {
  const lines = textarea.value.split("\n");
  const start = lines.slice(0, line - 1).reduce((n, l) => n + l.length + 1, 0);
  textarea.focus();
  textarea.setSelectionRange(start, start + (lines[line - 1] || "").length);
}
