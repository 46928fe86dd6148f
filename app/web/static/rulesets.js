// Rule sets: the caller's own and those shared with them, with the last test's precision and recall.
import { h, replace, guarded } from "./dom.js";

const TERMINAL = new Set(["SUCCEEDED", "FAILED", "CANCELLED"]);
const ratio = (value) => (value === null || value === undefined ? "—" : value.toFixed(2));

export class RulesetsView {
  constructor(api, root) {
    this.api = api;
    this.root = root;
  }

  async show() {
    const sets = await this.api.all("/rulesets?limit=100");
    // A test that ended but was never read has no numbers yet: reading its report computes and stores them.
    const reports = await Promise.all(sets.map((set) => this.report(set)));
    const rows = sets.map((set, i) => {
      const last = set.last_test;
      const report = reports[i];
      const tested = !last ? "never" : `v${last.version}${report.status && !TERMINAL.has(report.status) ? ` (${report.status})` : ""}`;
      return h(
        "tr",
        { "data-ruleset": `${set.owner}/${set.name}` },
        h("td", {}, set.name, set.retired_at ? h("span", { class: "muted" }, " (retired)") : null),
        h("td", {}, set.owner),
        h("td", { class: "latest" }, String(set.latest_version)),
        h("td", { class: "shared" }, set.shared ? "shared" : "private"),
        h("td", { class: "tested" }, tested),
        h("td", { class: "precision" }, ratio(report.precision)),
        h("td", { class: "recall" }, ratio(report.recall)),
      );
    });
    replace(
      this.root,
      h("h2", {}, "Rule sets"),
      rows.length
        ? h(
            "table",
            { id: "rulesets" },
            h("caption", { class: "muted" }, "Yours, then those shared with you; precision and recall over all rules of the last test"),
            h("thead", {}, h("tr", {}, ["Name", "Owner", "Latest version", "Shared", "Last test", "Precision", "Recall"].map((t) => h("th", { scope: "col" }, t)))),
            h("tbody", {}, rows),
          )
        : h("p", {}, "No rule sets yet: ", h("code", {}, "validate rules push rules.yaml --name NAME"), " stores one."),
      h("div", { class: "pager" }, h("button", { type: "button", onclick: () => guarded(() => this.show()) }, "Refresh")),
    );
  }

  // {status, precision, recall} of the set's last test, from the set's summary or, not reported yet, its report.
  async report(set) {
    const last = set.last_test;
    if (!last) return { status: null, precision: null, recall: null };
    if (last.reported) return { status: "SUCCEEDED", precision: last.precision, recall: last.recall };
    const path = `/rulesets/${encodeURIComponent(set.name)}/versions/${last.version}/test`;
    try {
      const test = await this.api.get(path);
      return { status: test.status, precision: test.report?.precision ?? null, recall: test.report?.recall ?? null };
    } catch {
      return { status: null, precision: null, recall: null }; // a test this caller may not read: no numbers
    }
  }

  close() {}
}
