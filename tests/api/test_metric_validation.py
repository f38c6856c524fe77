"""Bad bodies get 422 in FastAPI's shape, never a 500, and nothing is stored."""

from __future__ import annotations

import json

import pytest

LONG = "x" * 101


def _body(**overrides):
    return {"name": "ARR", "data_type": "NUMBER", **overrides}


INVALID_BODIES = [
    pytest.param(_body(extra=1), ("body", "extra"), "extra_forbidden", id="unknown-field"),
    pytest.param(_body(name=12), ("body", "name"), "string_type", id="name-number"),
    pytest.param(_body(name=None), ("body", "name"), "string_type", id="name-null"),
    pytest.param(_body(name="   "), ("body", "name"), "string_too_short", id="name-blank"),
    pytest.param(_body(name=LONG), ("body", "name"), "string_too_long", id="name-too-long"),
    pytest.param(_body(name="a\x00b"), ("body", "name"), "string_invalid_character", id="nul"),
    pytest.param(
        _body(name="a\ud800"), ("body", "name"), "string_invalid_character", id="surrogate"
    ),
    pytest.param(_body(name="a\x07b"), ("body", "name"), "string_invalid_character", id="bell"),
    pytest.param(_body(data_type="MONEY"), ("body", "data_type"), "literal_error", id="type"),
    pytest.param(_body(data_type=1), ("body", "data_type"), "literal_error", id="type-number"),
    pytest.param(_body(description=True), ("body", "description"), "string_type", id="desc-bool"),
    pytest.param(
        _body(description="d" * 2001), ("body", "description"), "string_too_long", id="desc-long"
    ),
    pytest.param(_body(unit="u" * 33), ("body", "unit"), "string_too_long", id="unit-long"),
    pytest.param(_body(key="Bad Key"), ("body", "key"), "string_pattern_mismatch", id="key-bad"),
    pytest.param(_body(key="1abc"), ("body", "key"), "string_pattern_mismatch", id="key-digit"),
    pytest.param(_body(key="a" * 65), ("body", "key"), "string_pattern_mismatch", id="key-long"),
    pytest.param(
        _body(allowed_values=["a"]), ("body", "allowed_values"), "value_error", id="allowed-number"
    ),
    pytest.param(
        _body(data_type="STRING", allowed_values=[]),
        ("body", "allowed_values"),
        "value_error",
        id="allowed-empty",
    ),
    pytest.param(
        _body(data_type="STRING", allowed_values=["a", "a"]),
        ("body", "allowed_values"),
        "value_error",
        id="allowed-dupes",
    ),
    pytest.param(
        _body(data_type="STRING", allowed_values=[str(i) for i in range(501)]),
        ("body", "allowed_values"),
        "value_error",
        id="allowed-too-many",
    ),
    pytest.param(
        _body(data_type="STRING", allowed_values=["ok", 3]),
        ("body", "allowed_values", 1),
        "string_type",
        id="allowed-not-string",
    ),
    pytest.param(
        _body(data_type="STRING", allowed_values=["v" * 1001]),
        ("body", "allowed_values", 0),
        "string_too_long",
        id="allowed-value-long",
    ),
]


@pytest.mark.parametrize(("body", "loc", "type_"), INVALID_BODIES)
async def test_invalid_create_bodies_are_422_and_store_nothing(client, body, loc, type_):
    # ensure_ascii: lone surrogates travel as \ud800 escapes, as a hostile client sends them
    response = await client.post(
        "/customers/metrics",
        content=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )

    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert any(tuple(d["loc"]) == loc and d["type"] == type_ for d in detail), detail
    listed = await client.get("/customers/metrics", params={"include_archived": True})
    assert listed.json()["data"] == []


RAW_BODIES = [
    pytest.param(b'{"name": "ARR", "data_type": "NUMBER"', id="truncated"),
    pytest.param(b'{"name": NaN, "data_type": "NUMBER"}', id="nan"),
    pytest.param(b'{"name": "ARR", "data_type": "NUMBER", "unit": Infinity}', id="infinity"),
    pytest.param(b'{"name": "ARR", "name": "B", "data_type": "NUMBER"}', id="duplicate-key"),
    pytest.param(b"[" * 10000 + b"]" * 10000, id="deep-nesting"),
    pytest.param(b'{"name": "\xff\xfe", "data_type": "NUMBER"}', id="not-utf8"),
]


@pytest.mark.parametrize("raw", RAW_BODIES)
async def test_malformed_json_is_422_json_invalid(client, raw):
    response = await client.post(
        "/customers/metrics", content=raw, headers={"content-type": "application/json"}
    )

    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["type"] == "json_invalid"
    assert (await client.get("/customers/metrics")).json()["data"] == []


async def test_non_object_json_body_is_422(client):
    response = await client.post("/customers/metrics", json=["name", "ARR"])
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body"]


async def test_wrong_content_type_is_415(client):
    response = await client.post(
        "/customers/metrics",
        content=b'{"name": "ARR", "data_type": "NUMBER"}',
        headers={"content-type": "text/plain"},
    )
    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"
    assert (await client.get("/customers/metrics")).json()["data"] == []


async def test_body_over_the_limit_is_413(client, app):
    limit = app.state.settings.max_body_bytes
    payload = b'{"name": "' + b"x" * limit + b'", "data_type": "NUMBER"}'
    response = await client.post(
        "/customers/metrics", content=payload, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json() == {
        "detail": "The request body is larger than this server accepts.",
        "code": "payload_too_large",
    }


async def test_data_type_is_accepted_in_any_case_and_returned_upper(client):
    response = await client.post("/customers/metrics", json=_body(data_type="boolean"))
    assert response.status_code == 201
    assert response.json()["data_type"] == "BOOLEAN"


async def test_names_are_trimmed_and_nfc_normalised_descriptions_kept_as_sent(client):
    decomposed = "Cafe\u0301 score"
    response = await client.post(
        "/customers/metrics",
        json=_body(name=f"  {decomposed}\t", description="  as sent \n", unit=" USD "),
    )
    body = response.json()
    assert response.status_code == 201
    assert body["name"] == "Caf\u00e9 score"
    assert body["description"] == "  as sent \n"
    assert body["unit"] == "USD"


async def test_tab_and_newline_are_allowed_in_descriptions(client):
    response = await client.post("/customers/metrics", json=_body(description="a\tb\r\nc"))
    assert response.status_code == 201
    assert response.json()["description"] == "a\tb\r\nc"
