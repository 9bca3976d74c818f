"""The base of every typed record a run writes and its reports read (manifest.json and its
parts): pydantic models whose figures may be absent or null (not measured) but, when
present, have their type. A reader never meets a missing key: an absent figure is None, an
absent list is empty, an absent section that is always there is its record with every
figure None. Keys a record does not declare are kept (a newer manifest still reads)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict

Number = float  # strict validation still takes an int for a float


class Record(BaseModel):
    # A figure set after construction (a stage filling in its record as it goes) is checked
    # against its type, and a dict given for a record becomes that record.
    model_config = ConfigDict(extra="allow", validate_assignment=True)


def _empty_list(value: Any) -> Any:
    return [] if value is None else value


def _empty_record(value: Any) -> Any:
    return {} if value is None else value


class Items:
    """`Items[T]`: a list of T in a record; null or absent reads as [] (the file may say null)."""

    def __class_getitem__(cls, item):
        return Annotated[list[item], BeforeValidator(_empty_list, json_schema_input_type=list[item] | None)]


class Always:
    """`Always[R]`: a record that reports read as always there: null or absent reads as R()
    with every figure None. Give it `Field(default_factory=R)`."""

    def __class_getitem__(cls, item):
        return Annotated[item, BeforeValidator(_empty_record, json_schema_input_type=item | None)]


def dumped(record: Record, **more: Any) -> dict:
    """`record` as JSON-ready data for manifest.json and the cache: the figures it was given
    (a figure never set stays absent, as a reader of the file expects), and `more`."""
    return {**record.model_dump(mode="json", by_alias=True, exclude_unset=True), **more}
