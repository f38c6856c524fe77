"""Schemathesis against the app's own OpenAPI document, in-process over ASGI, on every backend:
each operation with schema-valid and schema-violating data (the examples, coverage and fuzzing
phases), then stateful sequences along the document's links (create -> get -> patch -> delete).
Every built-in check runs; the three that meet contract behaviour JSON Schema cannot state are
narrowed below, each with its reason.

The default run is bounded for CI and reproducible: CM_FUZZ_EXAMPLES examples per operation and
stateful scenarios (25), derandomized. `make fuzz` raises the count and sets CM_FUZZ_RANDOM=1
to draw new inputs on every run."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import jsonschema_rs
import pytest
import schemathesis
from anyio.from_thread import start_blocking_portal
from hypothesis import HealthCheck, Phase, settings
from schemathesis import checks as builtin

from customer_metrics.main import create_app
from customer_metrics.settings import Settings
from customer_metrics.text import normalize_label
from tests.builders import create_org

EXAMPLES = int(os.environ.get("CM_FUZZ_EXAMPLES", "25"))
RANDOM = os.environ.get("CM_FUZZ_RANDOM") == "1"
BOUNDS: dict[str, Any] = dict(
    max_examples=EXAMPLES,
    derandomize=not RANDOM,
    deadline=None,  # a PostgreSQL round trip on a busy 2-core runner is no failure
    # No shrinking: the database keeps what every example wrote, so a replay meets other
    # state (a 409 where there was a 201) and Hypothesis would report flakiness instead of the
    # failure. The failure comes with its curl command.
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

DOCUMENT = create_app(Settings(secret_key="openapi-document-only")).openapi()
schema = schemathesis.openapi.from_dict(DOCUMENT)


async def _backend_app_not_given(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("every call names the app of the backend under test: app=...")


# An app makes schemathesis use its ASGI transport; each call passes its backend's app.
schema.app = _backend_app_not_given


@schema.hook
def filter_case(context: Any, case: Any) -> bool:
    """`metrics` and `search` are reserved customer ids (contract §2) because the paths they
    would make belong to other routes: GET /customers/metrics is the metric list and
    /customers/metrics/metrics the metric keyed `metrics`. A case that puts one in a customer
    path is a request to another operation, and says nothing about this one."""
    return (case.path_parameters or {}).get("customer_id") not in {"metrics", "search"}


schema.config.checks.update(
    excluded_check_names=[
        "positive_data_acceptance",
        "negative_data_rejection",
        "unsupported_method",
    ]
)


@pytest.fixture(scope="session")
def new_tenant(backend) -> Iterator[Callable[[], dict[str, str]]]:
    """Makes an organization and key on demand, from these synchronous tests: an app of its
    own whose lifespan (and database engine) lives in a portal thread's event loop."""
    app = create_app(backend.settings)
    with (
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(app.router.lifespan_context(app)),
    ):

        def new_auth() -> dict[str, str]:
            org = portal.call(create_org, app, "Fuzzing")
            return {"Authorization": f"Bearer {org.api_key}"}

        yield new_auth


@pytest.fixture(scope="session")
def fuzz_auth(new_tenant) -> dict[str, str]:
    """One organization and key per run and backend for the operation tests."""
    return new_tenant()


@pytest.fixture(scope="session")
def fuzz_app(backend):
    """An app of its own on the backend's database: schemathesis runs its lifespan (engine,
    pool) in its own event-loop thread, apart from the loop the other tests share."""
    return create_app(backend.settings)


def _own_key(case: Any) -> None:
    """A generated Idempotency-Key is drawn again and again for different requests: the 422
    idempotency_conflict that earns is right (and documented), but says nothing of the request
    as sent. Each call gets a key of its own (the key's form is still the fuzzer's: a
    suffix)."""
    if case.headers and "Idempotency-Key" in case.headers:
        case.headers["Idempotency-Key"] = (case.headers["Idempotency-Key"] + uuid.uuid4().hex)[
            -255:
        ]


@schema.parametrize()
@settings(**BOUNDS)
def test_every_operation(case, fuzz_app, fuzz_auth):
    _own_key(case)
    case.call_and_validate(app=fuzz_app, headers=fuzz_auth)


def test_stateful_sequences(fuzz_app, new_tenant):
    class Workflow(schema.as_state_machine()):  # type: ignore[misc]
        def setup(self):
            # A new organization per scenario: each starts from the same (empty) state, so
            # the same draws meet the same answers, as Hypothesis requires of a state machine.
            self.auth = new_tenant()

        def before_call(self, case):
            _own_key(case)

        def get_call_kwargs(self, case):
            return {"app": fuzz_app, "headers": self.auth}

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            # As the base class, plus the headers, so that checks know the key was ours.
            case.validate_response(
                response,
                additional_checks=additional_checks,
                headers=self.auth,
                transport_kwargs=kwargs,
                recorder=self.recorder,
            )

    # Over the state machine's own defaults (stateful_step_count and the like).
    Workflow.run(settings=settings(Workflow.TestCase.settings, **BOUNDS))


# --- Checks narrowed to what the contract requires. ---

# A schema-valid request may still get 422 where the rule depends on stored state, on other
# fields or on the clock, which JSON Schema cannot state: (location prefix, error types; None =
# any). Every other 422 to schema-valid data fails the run, so the document must keep saying
# what the server checks.
BEYOND_THE_SCHEMA: list[tuple[tuple[str | int, ...], set[str] | None]] = [
    # Cursors are opaque: only one the API issued is valid.
    (("query", "cursor"), {"cursor_invalid"}),
    (("body", "cursor"), {"cursor_invalid"}),
    # A value (and an increment) is typed by its metric's data_type and allowed_values.
    (("body", "value"), None),
    (("body", "increment"), None),
    # An atomic batch refuses all for one bad item, each judged like a single write.
    (("body", "values"), None),
    # Filter leaves name metrics that must exist and are typed by them (the grammar is in
    # the description).
    (("body", "filter"), None),
    (("body", "include"), {"not_found"}),
    (("body", "sort"), {"not_found"}),
    # At most 5 minutes ahead; a day its month has; an offset that stays within years 1-9999.
    (("body", "observed_at"), {"datetime_future", "datetime_parsing"}),
    (("query", "as_of"), {"datetime_parsing"}),
    # Series: `to` after `from`, a known IANA zone, at most 1,000 buckets, sum/avg on numbers.
    (("query", "from"), {"datetime_parsing", "value_error"}),
    (("query", "to"), {"datetime_parsing", "value_error"}),
    (("query", "tz"), {"value_error"}),
    (("query", "interval"), {"too_long"}),
    (("query", "agg"), {"value_error"}),
    # PATCH: allowed_values only on a metric that is (or becomes) STRING.
    (("body", "allowed_values"), {"value_error"}),
]


def _beyond_the_schema(item: dict[str, Any]) -> bool:
    loc, kind = tuple(item.get("loc", ())), item.get("type")
    if kind == "int_type" and isinstance(item.get("input"), float) and item["input"].is_integer():
        return True  # JSON Schema counts 50.0 as an integer; strict models take only 50
    return any(
        loc[: len(prefix)] == prefix and (types is None or kind in types)
        for prefix, types in BEYOND_THE_SCHEMA
    )


@schemathesis.check
def positive_data_acceptance_within_the_schema(ctx, response, case):
    """The built-in positive_data_acceptance, except for 422s listed in BEYOND_THE_SCHEMA."""
    if response.status_code == 422:
        detail = response.json().get("detail")
        if isinstance(detail, list) and detail and all(map(_beyond_the_schema, detail)):
            return None
    return builtin.positive_data_acceptance(ctx, response, case)


BATCH = "/external/v1/customers/metrics/values"
_ITEM = jsonschema_rs.validator_for(
    DOCUMENT["components"]["schemas"]["BatchWrite"]["properties"]["values"]["items"]
)
# Names, keys, units and customer ids are NFC-normalised and trimmed before their length and
# shape are checked (docs/api.md), which JSON Schema cannot state: "\t" + 100 characters is
# a name of 100, and 100 "e" + U+0301 are 100 characters, not 200.
LABELS = {
    ("POST", "/external/v1/customers/metrics"): ("MetricCreate", {"name", "key", "unit"}),
    ("PATCH", "/external/v1/customers/metrics/{ref}"): ("MetricUpdate", {"name", "unit"}),
    ("POST", "/external/v1/customers"): ("CustomerCreate", {"customer_id"}),
}


def _normalised(body: dict[str, Any], labels: set[str]) -> dict[str, Any]:
    return {
        k: normalize_label(v) if k in labels and isinstance(v, str) else v for k, v in body.items()
    }


def _valid_once_normalised(case: Any) -> bool:
    """Whether the case's only violations are in labels, and normalising them removes those."""
    model, labels = LABELS.get((case.method.upper(), case.operation.path), (None, set()))
    if model is None or not isinstance(case.body, dict) or case.meta is None:
        return False
    negated = {loc.value for loc, part in case.meta.components.items() if part.mode.is_negative}
    if not negated <= {"body", "header"}:  # the only header is the key, replaced by ours
        return False
    schema = {"$ref": f"#/components/schemas/{model}", "components": DOCUMENT["components"]}
    body = _normalised(case.body, labels)
    return body != case.body and jsonschema_rs.validator_for(schema).is_valid(body)


@schemathesis.check
def negative_data_rejection_after_normalisation(ctx, response, case):
    """The built-in negative_data_rejection, except for what the contract makes acceptable:
    a label that fits once normalised (LABELS), and a bad batch item, which a batch refuses by
    reporting it in a 200 (contract §4), so a batch whose only violations are items counts as
    rejected when the answer lists every one of them."""
    if 200 <= response.status_code < 300 and _valid_once_normalised(case):
        return None
    body = case.body
    if case.operation.path == BATCH and response.status_code == 200 and isinstance(body, dict):
        items = body.get("values")
        if isinstance(items, list):
            items = [_normalised(i, {"customer_id"}) if isinstance(i, dict) else i for i in items]
            bad = {index for index, item in enumerate(items) if not _ITEM.is_valid(item)}
            reported = {error["index"] for error in response.json()["errors"]}
            if bad <= reported:  # a 200 means the rest of the body was valid
                return None
    return builtin.negative_data_rejection(ctx, response, case)


# Literal paths that are also instances of another route's template: /customers/metrics and
# /customers/search are /customers/{customer_id} with a reserved id (422, contract §2), and
# /customers/metrics/values is /customers/metrics/{ref}. A method one route lacks reaches the
# other route, so it is answered, not a 405. (Their 405s list the right methods: test_operations.)
OVERLAPPING_PATHS = {
    "/external/v1/customers/metrics",
    "/external/v1/customers/search",
    "/external/v1/customers/metrics/values",
}


@schemathesis.check
def unsupported_method_outside_overlaps(ctx, response, case):
    """The built-in unsupported_method, on every path but OVERLAPPING_PATHS."""
    if case.operation.path in OVERLAPPING_PATHS:
        return None
    return builtin.unsupported_method(ctx, response, case)
