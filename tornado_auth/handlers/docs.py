"""The API's OpenAPI document as JSON, and as a page rendered from it on the server (no script,
no third-party assets: the strict Content-Security-Policy holds)."""

from __future__ import annotations

import json
from typing import Any

from ..openapi import openapi_document
from .base import ApiHandler, BaseHandler

METHODS = ("get", "post", "put", "patch", "delete")


class OpenApiHandler(ApiHandler):
    uses_session = False

    def get(self) -> None:
        self.send_json(openapi_document(self.settings.get("auth_prefix", "")))


def schema_text(schema: dict[str, Any] | None) -> str:
    """A short reading of a schema: a component's name, or its fields."""
    if not schema:
        return ""
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    if schema.get("type") == "array":
        return f"[{schema_text(schema.get('items'))}]"
    properties = schema.get("properties")
    if properties:
        required = set(schema.get("required", []))
        fields = [
            f"{name}{'' if name in required else '?'}: {schema_text(value)}"
            for name, value in properties.items()
        ]
        return "{" + ", ".join(fields) + "}"
    if "const" in schema:
        return json.dumps(schema["const"])
    kind = schema.get("type", "object")
    return kind if isinstance(kind, str) else " | ".join(kind)


def body_schema(holder: dict[str, Any]) -> dict[str, Any] | None:
    for content in holder.get("content", {}).values():
        schema: dict[str, Any] = content.get("schema", {})
        return schema
    return None


def operations(document: dict[str, Any]) -> list[dict[str, Any]]:
    """Each operation as the page shows it, in the document's order."""
    shown = []
    for path, item in document["paths"].items():
        for method in METHODS:
            spec = item.get(method)
            if spec is None:
                continue
            request = spec.get("requestBody")
            shown.append(
                {
                    "id": spec["operationId"],
                    "method": method.upper(),
                    "path": path,
                    "summary": spec["summary"],
                    "tag": spec["tags"][0],
                    "signed_in": bool(spec["security"]),
                    "body": schema_text(body_schema(request)) if request else "",
                    "parameters": [
                        (p["name"], p["in"], p.get("description", ""))
                        for p in item.get("parameters", []) + spec.get("parameters", [])
                    ],
                    "responses": [
                        (code, answer["description"], schema_text(body_schema(answer)))
                        for code, answer in spec["responses"].items()
                    ],
                }
            )
    return shown


class ApiDocsPage(BaseHandler):
    uses_session = False

    def get(self) -> None:
        document = openapi_document(self.settings.get("auth_prefix", ""))
        schemas = {
            name: schema_text({k: v for k, v in schema.items() if k != "description"})
            for name, schema in document["components"]["schemas"].items()
        }
        paragraphs = document["info"]["description"].replace("**", "").split("\n\n")
        self.render(
            "api_docs.html",
            paragraphs=paragraphs,
            current_user=None,
            document=document,
            operations=operations(document),
            schemas=schemas,
        )
