"""core/dynamo.Update: the one update-expression builder."""

from __future__ import annotations

import pytest

from core.dynamo import Update, typed


def test_clauses_come_out_in_one_expression_with_every_name_a_placeholder() -> None:
    update = (
        Update()
        .set(status="RUNNING")
        .set_to("charged", "if_not_exists({charged}, :zero) + :used", zero=0, used=7)
        .add(succeeded=1)
        .remove("queue_key", "error")
        .when("{status} = :queued AND {run} = :run", queued="QUEUED", run=2)
    )

    assert update.request() == {
        "UpdateExpression": "SET #status = :set_status, #charged = if_not_exists(#charged, :zero) + :used "
        "ADD #succeeded :add_succeeded REMOVE #queue_key, #error",
        "ConditionExpression": "#status = :queued AND #run = :run",
        "ExpressionAttributeNames": {
            "#status": "status",
            "#charged": "charged",
            "#succeeded": "succeeded",
            "#queue_key": "queue_key",
            "#error": "error",
            "#run": "run",
        },
        "ExpressionAttributeValues": {
            ":set_status": "RUNNING",
            ":zero": 0,
            ":used": 7,
            ":add_succeeded": 1,
            ":queued": "QUEUED",
            ":run": 2,
        },
    }


def test_a_nested_field_and_several_conditions() -> None:
    update = Update().set_to("{file_settled}.{3}", "{file_settled}.{3} + :one", one=1).when("{a} = :a", a=1)
    update.when("attribute_not_exists({b})")

    request = update.request(typed)

    assert request["UpdateExpression"] == "SET #file_settled.#_1 = #file_settled.#_1 + :one"
    assert request["ExpressionAttributeNames"] == {"#file_settled": "file_settled", "#_1": "3", "#a": "a", "#b": "b"}
    assert request["ConditionExpression"] == "(#a = :a) AND (attribute_not_exists(#b))"
    assert request["ExpressionAttributeValues"][":one"] == {"N": "1"}


def test_one_value_name_with_two_values_is_refused() -> None:
    with pytest.raises(ValueError, match=":run given twice"):
        Update().when("{run} = :run", run=1).when("{x} < :run", run=2)
