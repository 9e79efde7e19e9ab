"""The API as an OpenAPI 3.1 document, made from the route table and the same Structs the bodies decode into
(msgspec.json.schema_components), so the document cannot list a route or a field the app does not have."""
import re

import msgspec

from engine.api.problems import CODES, ErrorResponse
from engine.commands import CommandResult

SCHEMAS = "#/components/schemas/{name}"


def document(routes, engine_name) -> dict:
    structs = list(dict.fromkeys([r.body for r in routes if r.body is not None] +
                                 [r.answers for r in routes if r.answers is not None])) + [CommandResult, ErrorResponse]
    _, components = msgspec.json.schema_components(structs, ref_template=SCHEMAS)
    paths = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {"title": f"Strategy Orchestrator management API (engine {engine_name})", "version": "1",
                 "description": "docs/api.md: roles, bodies, error codes and examples."},
        "paths": paths,
        "components": {"schemas": components,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
    }


def _operation(route):
    summary, _, description = (route.summary or "").strip().partition(". ")
    operation = {"operationId": route.name, "summary": " ".join(summary.split())}
    if description:
        operation["description"] = " ".join(description.split())
    parameters = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                  for name in re.findall(r"\{(\w+)\}", route.path)]
    if route.command:
        parameters.append({"name": "Idempotency-Key", "in": "header", "required": False,
                           "description": "The command's id: a retry with the same key returns the first result",
                           "schema": {"type": "string", "maxLength": 64, "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"}})
    if parameters:
        operation["parameters"] = parameters
    if route.body is not None:
        operation["requestBody"] = {"required": False, "content": {"application/json": {"schema": _ref(route.body)}}}
    ok = _ref(route.answers) if route.answers else _ref(CommandResult) if route.command else {"type": "object"}
    operation["responses"] = {"200": {"description": "done" if route.command else "the data",
                                      "content": {"application/json": {"schema": ok}}}}
    for status in _errors(route):
        operation["responses"][str(status)] = {"description": CODES[status],
                                               "content": {"application/json": {"schema": _ref(ErrorResponse)}}}
    if route.role is None:
        operation["security"] = []
    else:
        operation["x-role"] = route.role
    return operation


def _errors(route):
    statuses = {503}
    if route.role is not None:
        statuses |= {401}
    if route.role == "operator":
        statuses |= {403}
    if "{" in route.path:
        statuses |= {404}
    if route.body is not None:
        statuses |= {400, 408, 413, 422}
    if route.command:
        statuses |= {409}
    return sorted(statuses | set(route.more_errors))


def _ref(struct_type):
    return {"$ref": SCHEMAS.format(name=struct_type.__name__)}
