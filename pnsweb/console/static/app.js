// The console's shell: sign-in, the navigation and the hash router (#/node, #/pts, #/jobs,
// #/jobs/ID, #/plots, #/steer). Views are modules with a render(main, scope, ...args).
import { api, h, Scope, ApiError } from "./lib.js";
import * as node from "./node.js";
import * as pts from "./pts.js";
import * as jobs from "./jobs.js";
import * as job from "./job.js";
import * as plots from "./plots.js";
import * as steer from "./steer.js";

const main = document.getElementById("main");
const ADMIN_VIEWS = [["node", "Node"], ["pts", "PTS"], ["jobs", "Jobs"], ["plots", "Plots"],
                     ["steer", "Deploy"]];
let me = null;
let scope = null;

function route() {
  const [view, arg] = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  const fallback = me.admin ? "node" : "jobs";
  const table = {
    node: () => node.render(main, scope),
    pts: () => (arg ? pts.renderOne(main, scope, arg) : pts.render(main, scope)),
    jobs: () => (arg ? job.render(main, scope, arg) : jobs.render(main, scope, me)),
    plots: () => plots.render(main, scope),
    steer: () => steer.render(main, scope, arg),
  };
  const name = table[view] && (me.admin || view === "jobs") ? view : fallback;
  document.querySelectorAll("#nav a").forEach((a) =>
    a.classList.toggle("here", a.dataset.view === name));
  if (scope) scope.stop();
  scope = new Scope();
  main.replaceChildren();
  table[name]();
}

function shell() {
  const views = me.admin ? ADMIN_VIEWS : [["jobs", "Jobs"]];
  document.getElementById("nav").replaceChildren(
    ...views.map(([view, label]) => h("a", { href: `#/${view}`, "data-view": view }, label)));
  document.getElementById("who").textContent = `${me.user}${me.admin ? " (admin)" : ""}`;
  document.getElementById("top").hidden = false;
  window.addEventListener("hashchange", route);
  route();
}

function login(message) {
  if (scope) scope.stop();
  document.getElementById("top").hidden = true;
  const error = h("p", { class: "field-error", id: "login-error" }, message || "");
  const user = h("input", { name: "user", autocomplete: "username", required: true });
  const password = h("input", { name: "password", type: "password",
                                autocomplete: "current-password", required: true });
  const form = h("form", { class: "card login", id: "login" },
    h("h1", {}, "PNS console"),
    h("label", {}, "User", user), h("label", {}, "Password", password), error,
    h("button", { class: "primary", type: "submit" }, "Sign in"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      me = await api("/login", { method: "POST",
                                 body: { user: user.value, password: password.value } });
      location.reload();
    } catch (failure) {
      error.textContent = failure.message;
    }
  });
  main.replaceChildren(form);
  user.focus();
}

document.getElementById("logout").addEventListener("click", async () => {
  await api("/logout", { method: "POST" }).catch(() => null);
  location.hash = "";
  location.reload();
});
window.addEventListener("signed-out", () => login("Your session ended: sign in again."));

try {
  me = await api("/me");
  shell();
} catch (error) {
  if (error instanceof ApiError && error.status === 401) login();
  else main.replaceChildren(h("p", { class: "error" }, error.message));
}
