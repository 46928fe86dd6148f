// The page: sign in with a key (kept in memory only), then a view per location hash.
import { Api } from "./api.js";
import { AdminView } from "./admin.js";
import { clearError, guarded, h, replace, showError } from "./dom.js";
import { RulesetsView } from "./rulesets.js";
import { ListView, NewView, ValidationView } from "./validations.js";

const api = new Api();
let me = null; // GET /me of the signed-in key
let current = null; // the view shown (closed when another is shown: its event stream ends)

const $ = (id) => document.getElementById(id);

function viewFor(hash, root) {
  const [, section, id] = hash.split("/");
  if (section === "validations" && id) return new ValidationView(api, root, decodeURIComponent(id));
  if (section === "new") return new NewView(api, root);
  if (section === "rulesets") return new RulesetsView(api, root);
  if (section === "admin" && me.role === "admin") return new AdminView(api, root);
  return new ListView(api, root);
}

async function route() {
  if (current) current.close();
  current = null;
  const signedIn = api.signedIn && me !== null;
  $("sign-in").hidden = signedIn;
  $("view").hidden = !signedIn;
  $("nav").hidden = !signedIn;
  if (!signedIn) {
    $("api-key").focus();
    return;
  }
  clearError();
  // Each view draws into an element of its own: a view left while it was still loading draws
  // into its detached element, never over the next one.
  const root = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  replace($("view"), root);
  const view = viewFor(location.hash || "#/validations", root);
  current = view;
  await guarded(() => view.show());
}

async function signIn(event) {
  event.preventDefault();
  const input = $("api-key");
  api.signIn(input.value.trim());
  try {
    me = await api.get("/me");
  } catch (error) {
    api.signOut();
    me = null;
    showError(error);
    return;
  }
  input.value = "";
  clearError();
  $("whoami").textContent = `${me.user_id} (${me.role})`;
  $("nav-admin").hidden = me.role !== "admin";
  await route();
}

function signOut() {
  api.signOut();
  me = null;
  $("whoami").textContent = "";
  location.hash = "";
  route();
}

$("sign-in-form").addEventListener("submit", signIn);
$("sign-out").addEventListener("click", signOut);
window.addEventListener("hashchange", route);
route();
