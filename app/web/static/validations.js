// Validations: the list, a new submission, and one validation's page with live progress.
import { estimateList, usd } from "./cost.js";
import { h, replace, guarded, showError, when } from "./dom.js";
import { UPLOAD_THRESHOLD, UploadList, learnedLimits, planFiles, sizeText, uploadFiles } from "./uploads.js";

const TERMINAL = new Set(["SUCCEEDED", "FAILED", "CANCELLED"]);
const PAGE_SIZE = 20;
const EXPORTS = [
  ["csv", "CSV"],
  ["sarif", "SARIF"],
  ["jsonl", "JSON Lines"],
];

const link = (id) => h("a", { href: `#/validations/${encodeURIComponent(id)}` }, id);

// ---- the list, a page at a time (cursors kept to go back) ----

export class ListView {
  constructor(api, root) {
    this.api = api;
    this.root = root;
    this.cursors = [null]; // the cursor of each page shown so far; the last is the current page's
  }

  async show() {
    const cursor = this.cursors[this.cursors.length - 1];
    const query = `limit=${PAGE_SIZE}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`;
    const page = await this.api.get(`/validations?${query}`);
    const rows = page.items.map((v) =>
      h(
        "tr",
        { "data-validation": v.id },
        h("td", {}, link(v.id)),
        h("td", { class: `status ${v.status}` }, v.status),
        h("td", {}, `${v.progress.succeeded + v.progress.failed}/${v.progress.total}`),
        h("td", {}, v.files.map((f) => f.name).join(", ")),
        h("td", {}, when(v.created_at)),
      ),
    );
    const older = () => {
      this.cursors.push(page.next_cursor);
      guarded(() => this.show());
    };
    const newer = () => {
      this.cursors.pop();
      guarded(() => this.show());
    };
    replace(
      this.root,
      h("h2", {}, "Validations"),
      rows.length
        ? h(
            "table",
            { id: "validations" },
            h("caption", { class: "muted" }, `Page ${this.cursors.length}, newest first`),
            h("thead", {}, h("tr", {}, ["Id", "Status", "Parts", "Files", "Created"].map((t) => h("th", { scope: "col" }, t)))),
            h("tbody", {}, rows),
          )
        : h("p", {}, "No validations yet. ", h("a", { href: "#/new" }, "Start one.")),
      h(
        "div",
        { class: "pager" },
        h("button", { type: "button", disabled: this.cursors.length === 1, onclick: newer }, "Newer"),
        h("button", { type: "button", disabled: !page.next_cursor, onclick: older }, "Older"),
        h("button", { type: "button", onclick: () => guarded(() => this.show()) }, "Refresh"),
      ),
    );
  }

  close() {}
}

// ---- a new validation: small files and rules as multipart, the body POST /validations takes;
// larger files straight to S3 first (uploads.js), named in its `uploads` fields ----

export function rulesOf(text) {
  const trimmed = text.trim();
  if (trimmed.startsWith("[")) {
    const parsed = JSON.parse(trimmed); // a SyntaxError is shown as it is
    if (!Array.isArray(parsed)) throw new Error("Rules: a JSON array, or one rule per line.");
    return parsed;
  }
  return trimmed
    .split(/\r?\n/)
    .map((line) => line.trim())
    .filter(Boolean);
}

const TIER_TEXT = { standard: "standard", flex: "flex (half price, slower)", batch: "batch (half price, within 24 h)" };

const namesAndSizes = (files) => files.map((f) => `${f.name} (${sizeText(f.size)})`).join(", ");

export class NewView {
  constructor(api, root) {
    this.api = api;
    this.root = root;
    this.stop = new AbortController(); // uploads in flight end when the view is left
  }

  async show() {
    // What this user may ask (GET /models): the model, and a tier both the model's and the user's.
    const offered = await this.api.get("/models");
    const model = h(
      "select",
      { id: "model", name: "model" },
      offered.models.map((m) => h("option", { value: m.name, selected: m.default }, m.default ? `${m.name} (default)` : m.name)),
    );
    const tier = h("select", { id: "tier", name: "tier" });
    const tiers = () => {
      const chosen = offered.models.find((m) => m.name === model.value);
      const usable = offered.your_tiers.filter((t) => chosen.tiers.includes(t));
      const keep = usable.includes(tier.value) ? tier.value : usable.includes(offered.default_tier) ? offered.default_tier : usable[0];
      tier.replaceChildren(...usable.map((t) => h("option", { value: t, selected: t === keep }, TIER_TEXT[t] || t)));
      tier.disabled = !usable.length;
    };
    tiers();
    model.addEventListener("change", tiers);
    const files = h("input", { id: "files", name: "files", type: "file", multiple: true, required: true });
    const rules = h("textarea", { id: "rules", name: "rules", rows: 5, required: true, spellcheck: "false" });
    const reuse = h("input", { id: "reuse", name: "reuse", type: "checkbox", checked: true });
    const submit = h("button", { type: "submit" }, "Validate");
    const estimate = h("button", { type: "button", id: "estimate-button" }, "Estimate");
    const outlook = h("section", { id: "estimate", class: "estimate", "aria-live": "polite", hidden: true });
    const uploading = h("section", { id: "uploads", role: "status", "aria-live": "polite", hidden: true });
    const list = new UploadList(uploading);
    const form = h(
      "form",
      { id: "new-validation" },
      h(
        "div",
        { class: "field" },
        h("label", { for: "files" }, "Files (text: CSV, JSON, Markdown, logs…)"),
        files,
        h("span", { class: "muted" }, `Files larger than ${sizeText(UPLOAD_THRESHOLD)} go straight to storage.`),
      ),
      h(
        "div",
        { class: "field" },
        h("label", { for: "rules" }, "Rules, one per line (or a JSON array of strings and {id, text})"),
        rules,
      ),
      h(
        "div",
        { class: "field inline" },
        h("label", { for: "model" }, "Model"),
        model,
        h("label", { for: "tier" }, "Tier"),
        tier,
      ),
      h("div", { class: "field inline" }, reuse, h("label", { for: "reuse" }, "Reuse verdicts of parts judged before")),
      outlook,
      uploading,
      h("div", { class: "actions" }, estimate, submit),
    );
    // The multipart body POST /validations takes (a dry run takes the same): the inline files, the
    // rules, and an `uploads` field per file uploaded straight to S3.
    const body = (inline, uploadIds) => {
      const data = new FormData();
      for (const file of inline) data.append("files", file, file.name);
      for (const id of uploadIds) data.append("uploads", id);
      data.append("rules", JSON.stringify(rulesOf(rules.value)));
      if (!reuse.checked) data.append("reuse", "false");
      data.append("model", model.value);
      if (!tier.disabled) data.append("tier", tier.value);
      return data;
    };
    // `send(plan)`; once more with the files a 413 naming one of the service's inline limits leaves out
    // uploaded (each limit moves files once at most).
    const withinInlineLimits = async (send) => {
      const chosen = [...files.files];
      let limits = {};
      for (;;) {
        const plan = planFiles(chosen, limits);
        try {
          return await send(plan);
        } catch (error) {
          const learned = learnedLimits(limits, error);
          if (!learned || planFiles(chosen, learned).inline.length === plan.inline.length) throw error;
          limits = learned;
        }
      }
    };
    // An estimate is of the files and rules it was asked for: a change makes it stale.
    const stale = () => {
      outlook.hidden = true;
      outlook.replaceChildren();
    };
    for (const input of [files, rules, reuse, model, tier]) input.addEventListener(input === rules ? "input" : "change", stale);
    estimate.addEventListener("click", () =>
      guarded(async () => {
        if (!form.reportValidity()) return;
        estimate.disabled = true;
        try {
          // A dry run reads no upload: it covers the files sent inline only, and says which it left out.
          const [answer, plan] = await withinInlineLimits(async (plan) => {
            if (!plan.inline.length) {
              throw new Error(
                `Nothing to estimate: an estimate covers files sent inline only, and every file goes straight to storage (${namesAndSizes(plan.uploaded)}).`,
              );
            }
            return [await this.api.json("POST", "/validations?dry_run=true", { form: body(plan.inline, []) }), plan];
          });
          replace(
            outlook,
            h("h3", {}, "Estimate"),
            estimateList(answer),
            plan.uploaded.length
              ? h(
                  "p",
                  { id: "not-estimated", class: "muted" },
                  `Not estimated: ${namesAndSizes(plan.uploaded)}. An estimate covers files sent inline only; these go straight to storage.`,
                )
              : null,
            h("p", { class: "muted" }, "Nothing was started or charged."),
          );
          outlook.hidden = false;
        } finally {
          estimate.disabled = false;
        }
      }),
    );
    const uploadIds = new Map(); // file → its upload's id: a file is uploaded once, whatever the retries
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      guarded(async () => {
        if (!form.reportValidity()) return;
        submit.disabled = estimate.disabled = true;
        try {
          const created = await withinInlineLimits(async (plan) => {
            const fresh = plan.uploaded.filter((f) => !uploadIds.has(f));
            if (fresh.length) {
              list.start(fresh);
              const ids = await uploadFiles(this.api, fresh, list, this.stop.signal);
              fresh.forEach((file, i) => uploadIds.set(file, ids[i]));
            }
            const data = body(plan.inline, plan.uploaded.map((f) => uploadIds.get(f)));
            return this.api.json("POST", "/validations", { form: data });
          });
          location.hash = `#/validations/${encodeURIComponent(created.id)}`;
        } catch (error) {
          if (error.name !== "AbortError") throw error; // the view was left: nothing to show
        } finally {
          submit.disabled = estimate.disabled = false;
        }
      });
    });
    replace(this.root, h("h2", {}, "New validation"), form);
  }

  close() {
    this.stop.abort();
  }
}

// ---- one validation: live per-file progress over EventSource, results, cancel, retry, exports ----

function fileState(file, status) {
  const result = file.result;
  if (result && result.status === "FAILED") return ["error", "ERROR"];
  if (result && result.status === "SUCCEEDED") {
    if (result.rules.some((r) => r.passed === false)) return ["fail", "FAIL"];
    // An ended file's rule without a verdict is undecided: never a pass.
    return result.rules.some((r) => r.passed === null) ? ["undecided", "UNDECIDED"] : ["pass", "PASS"];
  }
  if (status === "CANCELLED" || status === "FAILED") return ["none", "not judged"];
  if (file.settled === 0) return ["waiting", "waiting"];
  if (file.settled >= file.parts && file.parts > 1) return ["combining", "combining"];
  return ["running", "running"];
}

// Why an ended file's rule has no verdict (the rule's `undecided`).
const UNDECIDED_WHY = {
  ungrounded: "The model's findings could not be found in the text (asked twice): neither passed nor failed.",
  error: "The file failed before the rule was decided.",
};

// [class, word]: a rule without a verdict is undecided once its file has ended (results stored
// before the service gave a reason have none), and pending while the file runs.
function verdictOf(rule, ended) {
  if (rule.passed === true) return ["pass", "passed"];
  if (rule.passed === false) return ["fail", "failed"];
  if (rule.undecided || ended) return ["undecided", "undecided"];
  return ["pending", "pending"];
}

const linesOf = (line, end) => (end && end !== line ? `lines ${line}-${end}` : `line ${line}`);

// A finding, and beneath it the text of the lines it cites (taken from the stored file, so a
// reader sees why they were flagged). All of it is text from the file or the model: textContent only.
function findingItem(f) {
  return h(
    "li",
    {},
    h("strong", {}, f.location),
    " ",
    f.message,
    f.cited_line != null ? h("span", { class: "moved muted" }, ` (moved from line ${f.cited_line})`) : null,
    f.kind === "absence" ? h("span", { class: "absence muted" }, " (missing from the text)") : null,
    f.snippet ? h("pre", { class: "snippet" }, f.snippet) : null,
  );
}

// What the model claimed but the service found nowhere in the text: never findings, shown for audit.
function ungroundedClaims(claims) {
  if (!claims || !claims.length) return null;
  return h(
    "details",
    { class: "ungrounded" },
    h("summary", {}, `claims not found in the text (${claims.length})`),
    claims.map((c) =>
      h(
        "p",
        { class: "claim" },
        h("strong", {}, linesOf(c.line, c.end_line)),
        " ",
        c.message,
        c.quote ? [" ", h("q", {}, c.quote)] : null,
        c.source ? h("span", { class: "muted" }, ` (${c.source})`) : null,
      ),
    ),
  );
}

function ruleRow(rule, texts, ended) {
  const [kind, word] = verdictOf(rule, ended);
  const why = kind === "undecided" ? UNDECIDED_WHY[rule.undecided] || "No verdict." : null;
  return h(
    "tr",
    { "data-rule": rule.id },
    h("td", {}, h("code", {}, rule.id), " ", h("span", { class: "muted" }, texts[rule.id] || "")),
    h("td", { class: `verdict ${kind}`, title: why, "data-undecided": rule.undecided }, word),
    h(
      "td",
      {},
      why ? h("p", { class: "undecided-why" }, why) : null,
      rule.findings.length ? h("ul", { class: "findings" }, rule.findings.map(findingItem)) : null,
      ungroundedClaims(rule.ungrounded),
    ),
  );
}

export class ValidationView {
  constructor(api, root, id) {
    this.api = api;
    this.root = root;
    this.id = id;
    this.path = `/validations/${encodeURIComponent(id)}`;
    this.source = null;
    this.lastId = 0; // the last event received: a reopened stream resumes after it
    this.failures = 0; // stream openings in a row that delivered nothing
    this.closed = false;
  }

  async show() {
    this.validation = await this.api.get(this.path);
    this.files = this.validation.files.map((f) => ({ name: f.name, parts: f.parts, kind: f.kind, settled: 0, result: null }));
    this.build();
    await this.loadResults();
    this.render();
    if (!TERMINAL.has(this.validation.status)) await this.openStream();
  }

  close() {
    this.closed = true;
    this.closeStream();
  }

  file(name) {
    return this.files.find((f) => f.name === name);
  }

  async loadResults() {
    if (this.validation.purged_at) return;
    const results = await this.api.all(`${this.path}/results?limit=100`);
    for (const result of results) this.take(result);
  }

  take(result) {
    const file = this.file(result.file);
    if (!file) return;
    file.settled = result.parts.succeeded + result.parts.failed;
    if (result.status === "SUCCEEDED" || result.status === "FAILED") file.result = result;
    else file.partial = result;
  }

  // ---- the stream: a token per opening (EventSource sends no Authorization header) ----

  async openStream() {
    if (this.closed) return;
    const token = await this.api.json("POST", `${this.path}/stream-token`);
    if (this.closed) return;
    const url = this.lastId ? `${token.events_url}&after=${this.lastId}` : token.events_url;
    const source = new EventSource(url);
    this.source = source;
    this.live.textContent = "Live: connected";
    const on = (type, handle) =>
      source.addEventListener(type, (event) => {
        this.failures = 0;
        if (event.lastEventId) this.lastId = Number(event.lastEventId);
        handle(JSON.parse(event.data));
        this.render();
      });
    on("status", (data) => {
      this.validation.status = data.status;
      this.validation.error = data.error;
      this.validation.run = data.run;
    });
    on("progress", (data) => {
      this.validation.progress = { total: data.total, succeeded: data.succeeded, failed: data.failed, pending: data.pending };
      for (const [index, settled] of Object.entries(data.file_parts_settled || {})) {
        const file = this.files[Number(index)];
        if (file && !file.result) file.settled = settled;
      }
    });
    on("result", (data) => this.take(data));
    source.addEventListener("end", () => {
      this.closeStream();
      this.live.textContent = "Live: ended";
      guarded(async () => {
        this.validation = await this.api.get(this.path); // the final usage and counts
        await this.loadResults();
        this.render();
      });
    });
    source.addEventListener("error", () => {
      // A closed EventSource does not reconnect: the server refused it (an expired token) or
      // ended it without `end` (the key was rotated). Ask for a new token and resume after lastId;
      // while CONNECTING the browser is retrying the same URL itself.
      if (source.readyState !== EventSource.CLOSED || this.source !== source) return;
      this.closeStream();
      this.failures += 1;
      if (this.failures > 5) {
        this.live.textContent = "Live: disconnected";
        showError(new Error("The event stream keeps failing; reload the validation to try again."));
        return;
      }
      this.live.textContent = "Live: reconnecting";
      setTimeout(() => guarded(() => this.openStream()), 500 * this.failures);
    });
  }

  closeStream() {
    if (this.source) this.source.close();
    this.source = null;
  }

  // ---- actions ----

  async cancel() {
    this.validation = await this.api.json("DELETE", this.path);
    this.render();
    if (!this.source && !TERMINAL.has(this.validation.status)) await this.openStream();
    // CANCELLING until Step Functions reports the execution stopped: a read settles it (and the
    // stream then carries CANCELLED), so read a few times rather than wait for someone else to.
    for (let attempt = 0; attempt < 30 && this.validation.status === "CANCELLING" && !this.closed; attempt += 1) {
      await new Promise((resolve) => setTimeout(resolve, 1000));
      this.validation = await this.api.get(this.path);
      this.render();
    }
  }

  async retry() {
    this.validation = await this.api.json("POST", `${this.path}/retry`);
    for (const file of this.files) if (file.result && file.result.status === "FAILED") file.result = null;
    this.render();
    if (!this.source) await this.openStream();
  }

  // ---- rendering ----

  build() {
    this.header = h("div", { class: "summary" });
    this.live = h("p", { class: "muted", id: "live" }, "");
    this.progress = h("div", { id: "progress", role: "status", "aria-live": "polite" });
    this.fileRows = h("tbody");
    this.results = h("div", { id: "results" });
    const button = (label, id, action) => h("button", { type: "button", id, onclick: () => guarded(action) }, label);
    this.cancelButton = button("Cancel", "cancel", () => this.cancel());
    this.retryButton = button("Retry", "retry", () => this.retry());
    const exports = EXPORTS.map(([format, label]) =>
      button(label, `export-${format}`, () =>
        this.api.download(`${this.path}/report?format=${format}`, `${this.id}.${format === "jsonl" ? "jsonl" : format}`),
      ),
    );
    replace(
      this.root,
      h("h2", {}, "Validation ", h("code", {}, this.id)),
      this.header,
      h("div", { class: "actions" }, this.cancelButton, this.retryButton, h("span", { class: "muted" }, "Download:"), exports),
      this.progress,
      this.live,
      h(
        "table",
        { id: "files-table" },
        h("caption", {}, "Files"),
        h("thead", {}, h("tr", {}, ["File", "Kind", "Parts", "Progress", "State"].map((t) => h("th", { scope: "col" }, t)))),
        this.fileRows,
      ),
      h("h3", {}, "Results"),
      this.results,
    );
  }

  render() {
    const v = this.validation;
    const p = v.progress;
    replace(
      this.header,
      h("dl", {}, [
        h("dt", {}, "Status"),
        h("dd", { id: "status", class: `status ${v.status}` }, v.status),
        h("dt", {}, "Run"),
        h("dd", {}, v.run),
        h("dt", {}, "Created"),
        h("dd", {}, when(v.created_at)),
        h("dt", {}, "Tokens"),
        h(
          "dd",
          { id: "tokens" },
          `${v.usage.prompt_tokens + v.usage.completion_tokens} used (${v.usage.cached_prompt_tokens || 0} prompt tokens cached), ${v.usage.model_calls} model calls`,
        ),
        h("dt", {}, "Cost"),
        h("dd", { id: "cost" }, usd(v.usage.cost_usd), v.usage.model ? h("span", { class: "muted" }, ` (${v.usage.model})`) : null),
      ]),
      v.error ? h("p", { class: "error-text" }, `${v.error.type}: ${v.error.detail}`) : null,
    );
    replace(
      this.progress,
      h("label", { for: "overall" }, "Parts settled "),
      h("progress", { id: "overall", max: p.total || 1, value: p.succeeded + p.failed }),
      ` ${p.succeeded + p.failed}/${p.total} (${p.failed} failed) · ${v.status}`,
    );
    this.cancelButton.disabled = !["QUEUED", "RUNNING"].includes(v.status);
    this.retryButton.disabled = !["FAILED", "CANCELLED"].includes(v.status);
    replace(
      this.fileRows,
      this.files.map((file, index) => {
        const [state, label] = fileState(file, v.status);
        return h(
          "tr",
          { "data-file": file.name, "data-state": state },
          h("td", {}, file.name),
          h("td", {}, file.kind || ""),
          h("td", {}, file.parts),
          h(
            "td",
            {},
            h("progress", { max: file.parts, value: Math.min(file.settled, file.parts), "aria-label": `${file.name} parts settled` }),
            ` ${Math.min(file.settled, file.parts)}/${file.parts}`,
          ),
          h("td", { class: `state ${state}`, id: `file-state-${index}` }, label),
        );
      }),
    );
    this.renderResults();
  }

  renderResults() {
    const texts = Object.fromEntries(this.validation.rules.map((r) => [r.id, r.text]));
    // Decided files, and undecided ones with something to show already (findings of settled parts).
    const shown = this.files.filter((f) => f.result || (f.partial && f.partial.rules.some((r) => r.findings.length)));
    replace(
      this.results,
      shown.length ? null : h("p", { class: "muted" }, "No results yet."),
      shown.map((file) => {
        const result = file.result || file.partial;
        const ended = result.status === "SUCCEEDED" || result.status === "FAILED";
        const [state, label] = fileState(file, this.validation.status);
        return h(
          "section",
          { class: "file-result", "data-result": file.name },
          h("h4", {}, file.name, " ", h("span", { class: `state ${state}` }, label)),
          result.error
            ? h("p", { class: "error-text" }, `${result.error.type || "error"}: ${result.error.message || result.error.detail || ""}`)
            : null,
          h(
            "table",
            {},
            h("thead", {}, h("tr", {}, ["Rule", "Verdict", "Findings"].map((t) => h("th", { scope: "col" }, t)))),
            h(
              "tbody",
              {},
              result.rules.map((rule) => ruleRow(rule, texts, ended)),
            ),
          ),
        );
      }),
    );
  }
}
