"""DynamoDB marshalling, the one place for it: shared by core's request builders, the API's
stores (aioboto3) and the Lambdas' stores (boto3).

Two directions, two strengths:
- `typed` / `untyped`: low-level attribute values exactly as given (numbers must already be
  int or Decimal); what the sans-IO request builders in core send.
- `to_item` / `from_item`: records in plain Python: floats go in as exact Decimals (`None`
  values are left out), numbers come out as int/float, never Decimal.
`decimal` turns a float (a time, a rate) into the Decimal DynamoDB stores: rounded to the
microunit, so a value read back and compared (`tat = :seen`) matches what was written.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

_serializer, _deserializer = TypeSerializer(), TypeDeserializer()


def decimal(x: float) -> Decimal:
    return Decimal(repr(round(float(x), 6)))


def plain(value: Any) -> Any:
    """Decimals (deep) as int when integral, else float."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def decimals(value: Any) -> Any:
    """Floats (deep) as the exact Decimal of their repr: DynamoDB takes no float."""
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, list):
        return [decimals(v) for v in value]
    if isinstance(value, dict):
        return {k: decimals(v) for k, v in value.items()}
    return value


def typed(values: dict[str, Any]) -> dict[str, Any]:
    return {k: _serializer.serialize(v) for k, v in values.items()}


def untyped(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _deserializer.deserialize(v) for k, v in item.items()}


def to_item(values: dict[str, Any]) -> dict[str, Any]:
    return {k: _serializer.serialize(decimals(v)) for k, v in values.items() if v is not None}


def from_item(item: dict[str, Any]) -> dict[str, Any]:
    return {k: plain(_deserializer.deserialize(v)) for k, v in item.items()}


_FIELD = re.compile(r"\{([A-Za-z0-9_]+)\}")
Marshal = Callable[[dict[str, Any]], dict[str, Any]] | None


@dataclass
class Update:
    """One UpdateItem's expressions, attribute names and values, built clause by clause: the one
    builder of every store (the API's, the Lambdas') and of core's sans-IO requests.

    Attribute names always travel as `#` placeholders (no reserved-word surprises); in the
    expressions given to `set_to` and `when`, write a field as `{field}` (a nested one as
    `{file_settled}.{3}`) and a value as `:name`, passing `name=value`.

        Update().set(status="RUNNING").add(succeeded=1).remove("queue_key").when("{run} = :run", run=2)
    """

    _set: list[str] = field(default_factory=list)
    _add: list[str] = field(default_factory=list)
    _remove: list[str] = field(default_factory=list)
    _when: list[str] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)

    def _name(self, name: str) -> str:
        known = next((p for p, n in self.names.items() if n == name), None)
        if known is not None:
            return known
        placeholder = f"#{name}" if name.isidentifier() and not name.startswith("_") else f"#_{len(self.names)}"
        self.names[placeholder] = name
        return placeholder

    def _fields(self, expression: str) -> str:
        return _FIELD.sub(lambda m: self._name(m.group(1)), expression)

    def _value(self, name: str, value: Any) -> str:
        key = f":{name}"
        if key in self.values and self.values[key] != value:
            raise ValueError(f"value {key} given twice with different values")
        self.values[key] = value
        return key

    def _values(self, values: dict[str, Any]) -> None:
        for name, value in values.items():
            self._value(name, value)

    def set(self, **fields: Any) -> Update:
        """SET each field to its value."""
        for name, value in fields.items():
            self._set.append(f"{self._name(name)} = {self._value(f'set_{name}', value)}")
        return self

    def set_to(self, name: str, expression: str, **values: Any) -> Update:
        """SET a field (`{a}.{b}` for a nested one) to an expression, e.g. `if_not_exists({n}, :zero) + :more`."""
        self._values(values)
        self._set.append(f"{self._fields(name if '{' in name else '{' + name + '}')} = {self._fields(expression)}")
        return self

    def add(self, **counters: Any) -> Update:
        """ADD each number (or set) to its field."""
        for name, value in counters.items():
            self._add.append(f"{self._name(name)} {self._value(f'add_{name}', value)}")
        return self

    def remove(self, *names: str) -> Update:
        self._remove.extend(self._name(name) for name in names)
        return self

    def when(self, condition: str, **values: Any) -> Update:
        """A condition the write needs (several are ANDed)."""
        self._values(values)
        self._when.append(self._fields(condition))
        return self

    @property
    def expression(self) -> str:
        clauses = [("SET", self._set), ("ADD", self._add), ("REMOVE", self._remove)]
        return " ".join(f"{verb} {', '.join(parts)}" for verb, parts in clauses if parts)

    def item(self, table: str, key: dict[str, Any], marshal: Marshal = typed) -> dict[str, Any]:
        """A whole UpdateItem request (also a transaction's `Update`) for the item at `key`."""
        return {"TableName": table, "Key": marshal(key) if marshal else key, **self.request(marshal)}

    def request(self, marshal: Marshal = None) -> dict[str, Any]:
        """UpdateExpression, ConditionExpression and the names and values they use, values marshalled by
        `marshal` (`typed` for a low-level client; None for boto3's resources, which marshal themselves)."""
        request: dict[str, Any] = {"UpdateExpression": self.expression}
        if self._when:
            request["ConditionExpression"] = " AND ".join(f"({c})" if len(self._when) > 1 else c for c in self._when)
        if self.names:
            request["ExpressionAttributeNames"] = dict(self.names)
        if self.values:
            request["ExpressionAttributeValues"] = marshal(self.values) if marshal else dict(self.values)
        return request
