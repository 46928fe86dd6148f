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
