"""The shortcut for the usual timestamp form (UTC, milliseconds, `Z`) reads every string
exactly as the general parser does, and refuses the same ones with the same error."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from customer_metrics.errors import InvalidRequest
from customer_metrics.values import typed


def _outcome(parse, raw: str) -> object:
    try:
        return parse(raw, ("body", "observed_at"))
    except InvalidRequest as error:
        return (error.loc, error.detail, error.type)


@given(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)))
def test_usual_form_reads_as_the_general_parser_does(moment):
    raw = (
        f"{moment.year:04d}-"
        + moment.strftime("%m-%dT%H:%M:%S.")
        + f"{moment.microsecond // 1000:03d}Z"
    )
    parsed = typed.parse_timestamp(raw, ())
    assert parsed == typed.parse_any_timestamp(raw, ())
    assert parsed.tzinfo is UTC


@given(
    st.from_regex(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z\Z")
    | st.from_regex(
        r"\A\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})\Z"
    )
    | st.text(max_size=30)
)
def test_any_string_gets_the_general_parsers_answer(raw):
    assert _outcome(typed.parse_timestamp, raw) == _outcome(typed.parse_any_timestamp, raw)


@pytest.mark.parametrize(
    "raw",
    [
        "2021-02-29T00:00:00.000Z",
        "2021-01-01T24:00:00.000Z",
        "2021-01-01T00:00:60.000Z",
        "0000-01-01T00:00:00.000Z",
        "2021-01-01T00:00:00,000Z",
        "２０２１-01-01T00:00:00.000Z",
    ],
)
def test_impossible_usual_looking_strings_are_refused_alike(raw):
    refused = _outcome(typed.parse_timestamp, raw)
    assert isinstance(refused, tuple)
    assert refused == _outcome(typed.parse_any_timestamp, raw)
