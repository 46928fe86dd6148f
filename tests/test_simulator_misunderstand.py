"""The simulator's standing fault `misunderstand[/N]:<rule id>` (local/simulator/faults.py): one rule
misread, its verdicts flipped on the texts selected, deterministically, in answers the product takes."""

from __future__ import annotations

import pytest

from core import grounding
from core.prompt import COMBINE_RESPONSE_FORMAT, combine_messages
from local.simulator.app import Simulator, SimulatorConfig
from local.simulator.faults import FaultQueue, misread, parse_misunderstanding
from local.simulator.verdicts import read_call
from tests.test_simulator import (
    NONCE,
    RULES,
    _reports,
    absent,
    ask,
    body,
    content,
    grounded,
    holds,
    part_call,
    quoted,
    results,
    verdict,
)


@pytest.fixture
def sim() -> Simulator:
    return Simulator(SimulatorConfig(latency_seconds=0))


def test_a_misunderstood_rule_fails_what_it_passed_and_passes_what_it_failed_in_answers_the_product_takes(
    sim: Simulator,
) -> None:
    sim.reconfigure(faults=["misunderstand:no-secret", "misunderstand:total"])
    clean, leaky = "id,note\n1,fine\ntotal 1", "  \nthe secret\nno sum"

    on_clean, on_leaky = results(ask(sim, part_call(clean))), results(ask(sim, part_call(leaky)))

    # no-secret passed on the clean text: now it fails, citing the first line with its quote.
    assert on_clean[0] == verdict("no-secret", [quoted(1, "id,note", "misunderstood")])
    assert on_clean[1] == {**verdict("total", [quoted(1, "id,note", "misunderstood")]), "evidence": []}
    assert on_clean[2] == verdict("polite")  # another rule: as the simulator judges it
    # no-secret failed on the leaky text (line 2): now it passes; total failed (no "total"): now it passes.
    assert on_leaky[:2] == [verdict("no-secret"), verdict("total")]
    for text in (clean, leaky):  # grounded: taken as the model's verdict, never asked again
        checked = grounded(ask(sim, part_call(text)), text)
        assert (checked.ungrounded, checked.reask) == (0, [])
    assert sim.stats.snapshot()["faults_injected"] == 4  # standing: every answered call, none used up


def test_one_text_in_n_is_misread_by_a_hash_of_its_shown_lines_only(sim: Simulator) -> None:
    # The selection, pinned: SHA-256 of the shown lines joined with "\n", first 8 bytes, divisible by 2. These
    # are also the texts of tests/cli/test_rules.py, whose report was worked out by hand from this table.
    pinned = {
        "fine\n": True,
        "all clear\n": False,
        "a\nb\ntotal: 3\n": True,
        "secret on line 1\nand line 2\n": True,
        "id,note\n1,the secret\n": False,
        "the secret is out\n": False,
        "id,note\n1,fine\n": False,
    }
    assert {t: misread(read_call(body(part_call(t))).lines, 2) for t in pinned} == pinned
    sim.reconfigure(faults=["misunderstand/2:no-secret"])

    selected, unselected = results(ask(sim, part_call("fine"))), results(ask(sim, part_call("all clear")))
    # The same text under another name, nonce and first line number: the same verdict.
    moved = results(ask(sim, part_call("fine", first_line=7, file_name="b.txt", nonce="fedcba9876543210")))

    assert selected[0] == verdict("no-secret", [quoted(1, "fine", "misunderstood")])
    assert unselected[0] == verdict("no-secret")
    assert moved[0] == verdict("no-secret", [quoted(7, "fine", "misunderstood")])
    assert misread([(1, "x")], 1)  # N = 1: every text


def test_a_blank_text_gets_an_absence_finding_over_its_lines(sim: Simulator) -> None:
    sim.reconfigure(faults=["misunderstand:no-secret"])
    reply = ask(sim, part_call(" \n\t"))

    assert results(reply)[0] == verdict("no-secret", [absent(1, 2, "misunderstood")])


def test_combine_calls_are_not_misread_and_a_scripted_fault_still_applies_after_the_misreading(
    sim: Simulator,
) -> None:
    reports = _reports(sim, [(1, "secret"), (2, "total")], last_line=2)
    combine = combine_messages("a.txt", 2, reports, RULES, NONCE)
    truth = results(ask(sim, combine, COMBINE_RESPONSE_FORMAT))
    sim.reconfigure(faults=["misunderstand:no-secret", "part:drop_rule"])

    assert results(ask(sim, combine, COMBINE_RESPONSE_FORMAT)) == truth
    flipped_then_dropped = results(ask(sim, part_call("ok\ntotal")))
    assert flipped_then_dropped == [
        verdict("no-secret", [quoted(1, "ok", "misunderstood")]),
        verdict("total", evidence=[holds(2, "total")]),
    ]
    assert results(ask(sim, part_call("ok")))[0]["passed"] is False  # the misreading stays; drop_rule was used up
    assert len(results(ask(sim, part_call("ok")))) == 3


def test_reconfiguring_replaces_the_misunderstandings_and_bad_entries_change_nothing(sim: Simulator) -> None:
    sim.reconfigure(faults=["misunderstand:no-secret"])
    for bad in ("misunderstand:", "misunderstand/0:no-secret", "misunderstand/x:no-secret", "misunderstood:r"):
        with pytest.raises(ValueError, match="simulator fault"):
            sim.reconfigure(faults=[bad])
    assert results(ask(sim, part_call("fine")))[0]["passed"] is False  # still misread

    sim.reconfigure(faults=[])
    assert results(ask(sim, part_call("fine")))[0] == verdict("no-secret")
    assert "misunderstood" not in content(ask(sim, part_call("fine")))


@pytest.mark.parametrize(
    ("entry", "parsed"),
    [("misunderstand:a", ("a", 1)), ("misunderstand/3:a:b", ("a:b", 3)), ("drop_rule", None), ("part:cut", None)],
)
def test_entries_name_the_rule_after_the_first_colon(entry: str, parsed: tuple[str, int] | None) -> None:
    assert parse_misunderstanding(entry) == parsed
    assert FaultQueue([entry]).take("part") is not None


def test_the_grounding_check_finds_the_quote_of_a_long_first_line(sim: Simulator) -> None:
    sim.reconfigure(faults=["misunderstand:no-secret"])
    text = "x" * 300 + "\nsecond"

    checked = grounded(ask(sim, part_call(text)), text)

    assert checked.verdicts[0]["passed"] is False and checked.verdicts[0]["findings"][0]["line"] == 1
    assert grounding.squeeze(checked.verdicts[0]["findings"][0]["quote"]) == "x" * 200
