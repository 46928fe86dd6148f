// Admins: parallelism (SSM, live) and users (list, create, disable/enable, rotate a key).
import { h, replace, guarded } from "./dom.js";

const number = (id, label, attributes) =>
  h("div", { class: "field" }, h("label", { for: id }, label), h("input", { id, name: id, type: "number", ...attributes }));

export class AdminView {
  constructor(api, root) {
    this.api = api;
    this.root = root;
  }

  async show() {
    this.parallelism = h("section", { id: "parallelism", "aria-labelledby": "parallelism-title" });
    this.users = h("section", { id: "users", "aria-labelledby": "users-title" });
    replace(this.root, h("h2", {}, "Admin"), this.parallelism, this.users);
    await Promise.all([this.showParallelism(), this.showUsers()]);
  }

  close() {}

  // ---- parallelism ----

  async showParallelism() {
    const view = await this.api.get("/admin/parallelism");
    const form = h(
      "form",
      { id: "parallelism-form" },
      number("max_parallelism", "Max parallelism (model calls per validation, 1–40)", { min: 1, max: 40, value: view.max_parallelism }),
      number("target_tpm", "Target tokens per minute", { min: 1000, value: view.target_tpm }),
      number("throttle_threshold", "Throttle threshold (share of target, 0.05–1)", {
        min: 0.05,
        max: 1,
        step: 0.01,
        value: view.throttle_threshold,
      }),
      h("button", { type: "submit" }, "Save"),
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      guarded(async () => {
        const changes = {};
        for (const name of ["max_parallelism", "target_tpm", "throttle_threshold"]) {
          const value = Number(form.elements[name].value);
          if (value !== view[name]) changes[name] = value;
        }
        await this.api.json("PATCH", "/admin/parallelism", { json: changes });
        await this.showParallelism();
      });
    });
    replace(
      this.parallelism,
      h("h3", { id: "parallelism-title" }, "Parallelism"),
      h(
        "p",
        { id: "parallelism-now" },
        `Now: max parallelism ${view.max_parallelism}, target ${view.target_tpm} tokens/min × ${view.throttle_threshold}; `,
        `budget ${view.effective.tokens_per_window} tokens per ${view.effective.window_seconds} s, `,
        `${view.usage.tokens_last_window} used in the last window, ${view.usage.calls_in_flight} calls in flight.`,
      ),
      form,
    );
  }

  // ---- users ----

  async showUsers(createdKey = null) {
    const users = await this.api.all("/admin/users?limit=100");
    users.sort((a, b) => a.user_id.localeCompare(b.user_id));
    const userId = h("input", { id: "new-user-id", name: "user_id", required: true, pattern: "[A-Za-z0-9_.@\\-]+", maxlength: 64 });
    const role = h("select", { id: "new-user-role", name: "role" }, h("option", { value: "user" }, "user"), h("option", { value: "admin" }, "admin"));
    const create = h(
      "form",
      { id: "new-user" },
      h("div", { class: "field" }, h("label", { for: "new-user-id" }, "User id"), userId),
      h("div", { class: "field" }, h("label", { for: "new-user-role" }, "Role"), role),
      h("button", { type: "submit" }, "Create user"),
    );
    create.addEventListener("submit", (event) => {
      event.preventDefault();
      guarded(async () => {
        const user = await this.api.json("POST", "/admin/users", { json: { user_id: userId.value, role: role.value } });
        await this.showUsers({ user: user.user_id, key: user.api_key });
      });
    });
    const act = (label, action) => h("button", { type: "button", onclick: () => guarded(action) }, label);
    const rows = users.map((user) =>
      h(
        "tr",
        { "data-user": user.user_id },
        h("td", {}, user.user_id),
        h("td", {}, user.role),
        h("td", { class: "user-state" }, user.disabled ? "disabled" : "active"),
        h("td", {}, `${user.quota.capacity_tokens} tokens, +${user.quota.refill_tokens_per_minute}/min, ${user.quota.max_running} running`),
        h(
          "td",
          {},
          act(user.disabled ? "Enable" : "Disable", async () => {
            await this.api.json("PATCH", `/admin/users/${encodeURIComponent(user.user_id)}`, { json: { disabled: !user.disabled } });
            await this.showUsers();
          }),
          act("Rotate key", async () => {
            const rotated = await this.api.json("POST", `/admin/users/${encodeURIComponent(user.user_id)}/keys`);
            await this.showUsers({ user: rotated.user_id, key: rotated.api_key });
          }),
        ),
      ),
    );
    replace(
      this.users,
      h("h3", { id: "users-title" }, "Users"),
      createdKey
        ? h(
            "div",
            { id: "issued-key", class: "notice", role: "status" },
            `API key of ${createdKey.user}, shown once (only its hash is stored): `,
            h("code", {}, createdKey.key),
          )
        : null,
      h(
        "table",
        { id: "users-table" },
        h("thead", {}, h("tr", {}, ["User", "Role", "State", "Quota", ""].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, rows),
      ),
      create,
    );
  }
}
