"""The fidelity benchmark's ground truth and scoring, and a small corpus through the whole system."""

from __future__ import annotations

import dataclasses
import functools
from collections import Counter
from typing import Any

import pytest

from bench import fidelity
from bench.fidelity import BOM, KINDS, RULES, VARIANTS, CorpusFile, Finding, corpus, run, score
from local.simulator.server import SimulatorServer
from tests.support.stack import MakeApi

SEED = 7
SMALL = 20  # files in the end-to-end test
SMALL_LINES = 400  # longest many-part file of the end-to-end test (a few parts at the default budget)
BENCH = (fidelity.SEED, fidelity.FILES, fidelity.MAX_LINES)  # the corpus `make bench` runs
MARKERS = {"no-secret": "secret", "no-password": "password", "copyright": "copyright"}


def physical_lines(content: str) -> list[str]:
    """The file's lines by a character scan (not the generator's regex): breaks are \\r\\n, \\r and \\n only."""
    text = content[1:] if content.startswith(BOM) else content
    lines: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char in "\r\n":
            lines.append("".join(current))
            current = []
            i += 2 if text[i : i + 2] == "\r\n" else 1
            continue
        current.append(char)
        i += 1
    if current:
        lines.append("".join(current))
    return lines


def recount(file: CorpusFile) -> tuple[dict[str, bool], list[Finding]]:
    """What the simulator's rules say of the file, found again from its text."""
    lines = [line.lower() for line in physical_lines(file.content)]
    findings = [
        Finding(rule, n, n)
        for rule in ("no-secret", "no-password")
        for n, line in enumerate(lines, 1)
        if MARKERS[rule] in line
    ]
    if not any(MARKERS["copyright"] in line for line in lines):
        findings.append(Finding("copyright", 1, len(lines)))
    verdicts = {rule["id"]: not any(f.rule == rule["id"] for f in findings) for rule in RULES}
    return verdicts, sorted(findings)


def perfect(files: list[CorpusFile]) -> list[dict[str, Any]]:
    """Result items (`GET /validations/{id}/results`) exactly as the truth says."""
    return [
        {
            "file": f.name,
            "status": "SUCCEEDED",
            "rules": [
                {
                    "id": rule["id"],
                    "passed": f.verdicts[rule["id"]],
                    "findings": [
                        {"line": x.line, "end_line": x.end_line, "location": "", "message": ""}
                        for x in f.findings
                        if x.rule == rule["id"]
                    ],
                }
                for rule in RULES
            ],
        }
        for f in files
    ]


# --- the corpus --------------------------------------------------------------------------------------


@functools.cache
def corpus_once(seed: int, files: int, max_lines: int) -> tuple[CorpusFile, ...]:
    """The corpus of `corpus(seed, files, max_lines=...)`, generated once per test process: the bench's
    takes ~1 s, and the tests below only read it (test_the_same_seed_gives_the_same_bytes generates afresh)."""
    return tuple(corpus(seed, files, max_lines=max_lines))


@pytest.mark.parametrize("seed, files, max_lines", [(SEED, SMALL, SMALL_LINES), BENCH])
def test_ground_truth_matches_an_independent_recount_of_the_text(seed: int, files: int, max_lines: int) -> None:
    for file in corpus_once(seed, files, max_lines):
        verdicts, findings = recount(file)
        assert (file.verdicts, list(file.findings)) == (verdicts, findings), file.name
        assert file.lines == len(physical_lines(file.content)), file.name


@pytest.mark.parametrize("seed, files, max_lines", [(SEED, SMALL, SMALL_LINES), BENCH])
def test_every_kind_and_variant_appears(seed: int, files: int, max_lines: int) -> None:
    generated = corpus_once(seed, files, max_lines)
    lengths = [f.lines for f in generated]

    assert {f.kind for f in generated} == set(KINDS)
    assert set().union(*(f.variants for f in generated)) == set(VARIANTS)
    assert min(lengths) <= 8 and max(lengths) >= 40  # one-part and many-part files
    assert any(f.content.startswith(BOM) and "\r\n" in f.content for f in generated)
    assert any("\r" in f.content and "\n" not in f.content for f in generated)  # CR-only
    assert any(c in f.content for f in generated for c in "é漢😀")
    assert any(c in f.content for f in generated for c in "\u2028\u2029\x85\x0c")
    assert any(len(line) >= 300 for f in generated for line in physical_lines(f.content))
    assert any(f.kind == "csv" and f.lines >= 40 and not f.verdicts["no-secret"] for f in generated)
    assert any(not f.verdicts["copyright"] for f in generated)
    assert all(set(f.verdicts) == {r["id"] for r in RULES} for f in generated)


def test_about_a_tenth_of_files_lack_copyright_and_the_rest_hold_it_on_exactly_one_line() -> None:
    generated = corpus_once(*BENCH)
    holders = [
        [n for n, line in enumerate(physical_lines(f.content), 1) if "copyright" in line.lower()] for f in generated
    ]

    assert 0.05 <= sum(not h for h in holders) / len(generated) <= 0.15
    assert all(len(h) <= 1 for h in holders)
    assert all(f.verdicts["copyright"] == bool(h) for f, h in zip(generated, holders, strict=True))


def test_markers_sit_in_short_lines_never_in_a_header_row() -> None:
    for file in corpus_once(*BENCH):
        lines = physical_lines(file.content)
        if file.kind in ("csv", "tsv"):
            assert not any(word in lines[0].lower() for word in MARKERS.values()), file.name
        for line in lines:
            if any(word in line.lower() for word in MARKERS.values()):
                assert len(line) <= 150, (file.name, line)


def test_the_same_seed_gives_the_same_bytes() -> None:
    assert corpus(3, 30) == corpus(3, 30)
    assert [f.content for f in corpus(3, 30)] != [f.content for f in corpus(4, 30)]


# --- scoring ------------------------------------------------------------------------------------------


@pytest.fixture
def truth() -> list[CorpusFile]:
    return corpus(SEED, SMALL, max_lines=SMALL_LINES)


def first_finding(results: list[dict[str, Any]], rule: str = "no-secret") -> tuple[dict[str, Any], dict[str, Any]]:
    """(file item, finding) of the first file reporting a finding of `rule`."""
    for item in results:
        for verdict in item["rules"]:
            if verdict["id"] == rule and verdict["findings"]:
                return item, verdict
    raise AssertionError(f"no finding of {rule} in the corpus")


def test_a_perfect_result_scores_one(truth: list[CorpusFile]) -> None:
    measured = score(truth, perfect(truth))

    assert measured.expected == measured.reported == measured.matched == sum(len(f.findings) for f in truth) > 0
    assert (measured.precision, measured.recall, measured.accuracy) == (1.0, 1.0, 1.0)
    assert measured.pairs == len(truth) * len(RULES)


def test_a_shifted_line_is_one_missing_and_one_extra_finding(truth: list[CorpusFile]) -> None:
    results = perfect(truth)
    item, verdict = first_finding(results)
    verdict["findings"][0]["line"] += 1
    verdict["findings"][0]["end_line"] += 1
    n = sum(len(f.findings) for f in truth)

    measured = score(truth, results)

    assert (measured.precision, measured.recall, measured.accuracy) == ((n - 1) / n, (n - 1) / n, 1.0)
    assert (
        len(measured.missing) == len(measured.extra) == 1
        and measured.missing[0][0] == measured.extra[0][0] == item["file"]
    )


def test_a_missing_finding_lowers_recall_only_and_an_extra_one_precision_only(truth: list[CorpusFile]) -> None:
    n = sum(len(f.findings) for f in truth)
    missing = perfect(truth)
    first_finding(missing)[1]["findings"].pop(0)
    extra = perfect(truth)
    verdict = first_finding(extra)[1]
    verdict["findings"].append(dict(verdict["findings"][0]))  # a duplicate is an extra finding

    assert (score(truth, missing).precision, score(truth, missing).recall) == (1.0, (n - 1) / n)
    assert (score(truth, extra).precision, score(truth, extra).recall) == (n / (n + 1), 1.0)


def test_wrong_verdicts_and_a_missing_file_lower_accuracy(truth: list[CorpusFile]) -> None:
    results = perfect(truth)
    results[0]["rules"][2]["passed"] = not results[0]["rules"][2]["passed"]
    dropped = results.pop()
    pairs = len(truth) * len(RULES)

    measured = score(truth, results)

    assert measured.accuracy == (pairs - 1 - len(RULES)) / pairs
    assert Counter(f for f, _ in measured.wrong_verdicts) == {truth[0].name: 1, dropped["file"]: len(RULES)}
    assert (
        measured.recall == (measured.expected - sum(len(r["findings"]) for r in dropped["rules"])) / measured.expected
    )


def test_findings_of_a_file_not_in_the_corpus_are_extra(truth: list[CorpusFile]) -> None:
    stray = dataclasses.replace(next(f for f in truth if f.findings), name="stray.txt")
    measured = score(truth, perfect(truth) + perfect([stray]))

    assert measured.recall == 1.0 and measured.precision == measured.expected / (
        measured.expected + len(stray.findings)
    )
    assert {name for name, _ in measured.extra} == {"stray.txt"}


# --- through the whole system ---------------------------------------------------------------------------


@pytest.mark.slow(25)
def test_small_corpus_findings_are_line_exact_and_charges_match_the_bill(
    make_api: MakeApi, simulator: SimulatorServer
) -> None:
    # 1,024 completion tokens: the simulator cuts an answer longer than max_tokens.
    api = make_api(completion_max_tokens=1024)
    files = corpus(SEED, SMALL, max_lines=SMALL_LINES)

    report = run(api, simulator, files, timeout=240)

    misses = {k: report[k][:5] for k in ("missing", "extra", "wrong_verdicts")}
    assert report["statuses"] == {"SUCCEEDED": 1} and report["files_not_succeeded"] == 0, report
    assert report["multi_part_files"] >= 5 and report["parts"] > report["files"]
    assert (report["precision"], report["recall"], report["accuracy"]) == (1.0, 1.0, 1.0), misses
    assert report["combine_calls"] >= report["multi_part_files"]  # every multi-part file was combined
    assert report["uncharged_validations"] == 0
    assert report["charged_per_billed"] == pytest.approx(1.0, abs=1e-9), (
        report["charged_tokens"],
        report["billed_tokens"],
    )
    combine = {k: report[k] for k in ("combine_calls", "multi_part_files", "parts", "part_calls", "reasked")}
    assert report["combine_per_multi_part_file"] <= 1.1, (combine, report["reasked"])
