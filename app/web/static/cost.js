// Money on the page: a validation's cost and the estimate a dry run answers (POST /validations?dry_run=true).
import { h } from "./dom.js";

// "$0.001234": to the millionth the API gives, trailing zeros dropped down to cents; "no price" for null.
export function usd(amount) {
  if (amount === null || amount === undefined) return "no price";
  const [whole, fraction = ""] = amount.toFixed(6).replace(/0+$/, "").split(".");
  return `$${whole}.${fraction.padEnd(2, "0")}`;
}

const count = (n, word) => `${n.toLocaleString("en-US")} ${word}${n === 1 ? "" : "s"}`;
const number = (n) => n.toLocaleString("en-US");

// What the quota would do and why (`would.reason`).
const QUOTA_WHY = {
  max_queued: "your queue of waiting validations is full",
  queue: "your validations already queued go first",
  max_running: "you have max-running validations running",
  tokens: "your token bucket must refill first",
};

function seconds(s) {
  if (s < 90) return `${Math.round(s * 10) / 10} s`;
  if (s < 90 * 60) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

function quotaOutlook(would) {
  const word = would.quota === "refuse" ? "refuse (429)" : would.quota;
  return would.reason ? `${word}: ${QUOTA_WHY[would.reason] || would.reason}` : word;
}

function budgetOutlook(budget) {
  if (!budget) return "no budget";
  if (budget.estimate_usd === null) return "refuse: the model has no price, so no budget can hold it";
  if (budget.verdict === "admit") return `admit: reserves ${usd(budget.estimate_usd)} of ${usd(budget.remaining_usd)} left`;
  return `refuse (429): needs ${usd(budget.estimate_usd)}, ${usd(budget.remaining_usd)} left; resets ${new Date(budget.resets_at).toLocaleString()}`;
}

// The estimate as a list: the model and tier, calls, tokens, the cost at that tier (p50–p90), what the
// quota and the budget would do now, and when it would start.
export function estimateList(e) {
  const tier = e.tier || "standard";
  const atTier = e.cost_usd && e.cost_usd[tier];
  const { parts, combine, total } = e.model_calls;
  const prompt = e.prompt_tokens;
  const completion = e.completion_tokens;
  const duration = e.duration_seconds;
  const rows = [
    ["Model", `${e.model} at the ${tier} tier`],
    ["Parts", `${count(e.parts, "part")} in ${count(e.files, "file")}${e.reused_parts ? `, ${number(e.reused_parts)} answered by the reuse cache` : ""}`],
    ["Model calls", `${number(total)} (${number(parts)} for parts, ${number(combine)} to combine)`],
    ["Prompt tokens", `${number(prompt.total)} (${number(prompt.cached)} cached)`],
    ["Completion tokens", `${number(completion.p50)}–${number(completion.p90)} (p50–p90)`],
    ["Cost", atTier ? `${usd(atTier.p50)}–${usd(atTier.p90)} at ${tier} (p50–p90)` : `no price for ${e.model} at ${tier}`],
    ["Quota", quotaOutlook(e.would)],
    ["Budget", budgetOutlook(e.would.budget)],
    [
      "Time",
      (duration.start_in > 0 ? `starts in ~${seconds(duration.start_in)}` : "starts now") +
        (duration.run !== null ? `, runs ~${seconds(duration.run)}` : ""),
    ],
  ];
  return h(
    "dl",
    {},
    rows.map(([name, value]) => [h("dt", {}, name), h("dd", { "data-estimate": name.toLowerCase().replace(/ /g, "-") }, value)]),
  );
}
