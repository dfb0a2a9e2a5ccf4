"""docs/openapi.yaml stays true: it is valid OpenAPI 3.1, it names exactly the app's /api
routes and methods, its request bodies name the fields the pydantic models accept, real
answers validate against its response schemas, and it is served to signed-in users."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from flask import Flask
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from pydantic import BaseModel

from acd.manage import StatusChange
from acd.skill_catalog import SkillRequest
from acd.wrapups import WrapupRequest
from admin.models import Role
from admin.openapi_http import OPENAPI_PATH
from admin.schemas import ErlangCBody, MeasuredQuery, ReportQuery
from ivr.model import Hours
from kokan.config import AgentSettings, QueueSettings
from kokan.db import Database
from recording.schemas import RecordingQuery
from tests.kpi_rows import PERIOD, store_center
from tests.test_tickets_api import Api, error, ok
from tickets.schemas import (
    MergeBody,
    NoteBody,
    ProactiveEventBody,
    SubscriptionPatch,
    TicketPatch,
)

HTTP_METHODS = ("get", "put", "post", "delete", "patch")
FLASK_ARGUMENT = re.compile(r"<(?:[^<>]*:)?(\w+)>")
"""`<int:ticket_id>` or `<any(start, pause, resume):action>` -> the name OpenAPI puts in braces."""


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(OPENAPI_PATH.read_text(encoding="utf-8"))
    return loaded


@pytest.fixture
def api(app: Flask, database: Database) -> Api:
    return Api(app.test_client(), database)


def operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (path, method): item[method]
        for path, item in document["paths"].items()
        for method in HTTP_METHODS
        if method in item
    }


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1.")
    validate(document)  # raises on the first problem


def test_it_names_exactly_the_apps_api_routes(app: Flask, document: dict[str, Any]) -> None:
    routes = {
        (FLASK_ARGUMENT.sub(r"{\1}", rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/")
        for method in rule.methods or ()
        if method.lower() in HTTP_METHODS
    }
    assert ("/api/recordings/live/{call_sid}/{action}", "post") in routes  # the converter goes
    documented = set(operations(document))
    assert not routes - documented, "routes missing from docs/openapi.yaml"
    assert not documented - routes, "docs/openapi.yaml names routes the app does not have"


def test_every_operation_names_its_roles_and_its_401(document: dict[str, Any]) -> None:
    roles = {role.value for role in Role}
    ids: list[str] = []
    for (path, method), operation in operations(document).items():
        assert operation.get("x-roles"), f"{method} {path}: no x-roles"
        assert set(operation["x-roles"]) <= roles, f"{method} {path}"
        assert "401" in operation["responses"], f"{method} {path}: no 401"
        ids.append(operation["operationId"])
    assert len(ids) == len(set(ids))


def _schema(document: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = document["components"]["schemas"][name]
    return found


def _body(document: dict[str, Any], path: str, method: str) -> dict[str, Any]:
    schema = document["paths"][path][method]["requestBody"]["content"]["application/json"]
    found: dict[str, Any] = schema["schema"]
    if "$ref" in found:
        return _schema(document, found["$ref"].rsplit("/", 1)[-1])
    return found


def _accepted(model: type[BaseModel]) -> set[str]:
    return {field.alias or name for name, field in model.model_fields.items()}


def _parameters(document: dict[str, Any], path: str) -> set[str]:
    names = set()
    for parameter in document["paths"][path]["get"]["parameters"]:
        if "$ref" in parameter:
            parameter = document["components"]["parameters"][parameter["$ref"].rsplit("/", 1)[-1]]
        if parameter["in"] == "query":
            names.add(parameter["name"])
    return names


def test_request_bodies_and_queries_name_what_the_models_accept(
    document: dict[str, Any],
) -> None:
    bodies: list[tuple[str, str, type[BaseModel], set[str]]] = [
        ("/api/acd/queues/{name}", "put", QueueSettings, set()),
        ("/api/acd/agents/{agent_id}", "put", AgentSettings, set()),
        ("/api/acd/me/status", "post", StatusChange, set()),
        ("/api/customers/{customer_id}/merge", "post", MergeBody, set()),
        ("/api/tickets/{ticket_id}", "patch", TicketPatch, {"legal_hold"}),
        ("/api/tickets/{ticket_id}/notes", "post", NoteBody, set()),
        ("/api/webhooks/subscriptions/{subscription_id}", "patch", SubscriptionPatch, set()),
        ("/api/proactive/events", "post", ProactiveEventBody, set()),
        ("/api/staffing/erlang-c", "post", ErlangCBody, set()),
        ("/api/acd/skills/{name}", "put", SkillRequest, set()),
        ("/api/acd/calls/{call_id}/wrapup", "post", WrapupRequest, set()),
        ("/api/flows/{name}/hours/{hours_id}", "put", Hours, {"note"}),
    ]
    for path, method, model, extra in bodies:
        documented = set(_body(document, path, method)["properties"])
        assert documented == _accepted(model) | extra, f"{method} {path}"
    required = set(_schema(document, "ErlangCRequest")["required"])
    assert required == {n for n, f in ErlangCBody.model_fields.items() if f.is_required()}

    assert _parameters(document, "/api/reports/kpis") == _accepted(ReportQuery)
    assert _parameters(document, "/api/staffing/measured") == _accepted(MeasuredQuery)
    assert _parameters(document, "/api/recordings") == _accepted(RecordingQuery)


def check(document: dict[str, Any], name: str, value: Any) -> None:
    """Validate `value` against a component schema, its $refs resolved in the document."""
    schema = {"$ref": f"#/components/schemas/{name}", "components": document["components"]}
    problems = [e.message for e in Draft202012Validator(schema).iter_errors(value)]
    assert not problems, problems


def test_real_answers_follow_the_documented_schemas(
    api: Api, database: Database, document: dict[str, Any]
) -> None:
    store_center(database)
    for by in ("", "&by=day", "&by=agent", "&by=queue&queue=sales"):
        check(document, "KpiReport", ok(api.get(f"/api/reports/kpis?{PERIOD}{by}", user="sato")))
    measured = ok(api.get(f"/api/staffing/measured?{PERIOD}", user="sato"))
    check(document, "MeasuredDemand", measured)
    quiet = ok(api.get("/api/staffing/measured?start=2026-01-01&end=2026-01-02", user="sato"))
    check(document, "MeasuredDemand", quiet)
    body = {
        "calls_per_interval": 100,
        "interval_minutes": 30,
        "average_handle_time_seconds": 180,
        "target_service_level_pct": 80,
        "target_answer_seconds": 20,
    }
    check(document, "ErlangCRequest", body)
    check(document, "ErlangCResult", ok(api.post("/api/staffing/erlang-c", body, user="sato")))
    refused = api.get("/api/reports/kpis?start=2026-03-02", user="sato")
    assert error(refused, 400) == "report-period-invalid"
    check(document, "Error", refused.get_json())
    check(document, "Error", api.get("/api/me", user=None).get_json())
    # a schema that could not fail would prove nothing
    with pytest.raises(AssertionError):
        check(document, "ErlangCResult", {**body, "agents_on_phones": "many"})


def test_the_document_is_served_to_signed_in_users(api: Api) -> None:
    assert error(api.get("/api/openapi.yaml", user=None), 401) == "authentication-required"
    for user in ("aiko", "sato", "root"):
        response = api.get("/api/openapi.yaml", user=user)
        assert response.status_code == 200
        assert response.mimetype == "application/yaml"
        assert response.data == OPENAPI_PATH.read_bytes()
    served = yaml.safe_load(api.get("/api/openapi.yaml").data)
    assert "/api/reports/kpis" in served["paths"]
