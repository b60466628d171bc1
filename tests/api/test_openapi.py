"""`GET /openapi.json` describes the live API: schemathesis generates requests for every operation from
the document and checks each answer (no 5xx, status and body as documented, error envelope); `/docs`
renders it from vendored files.

Examples per operation are bounded (hypothesis `max_examples`) so the suite stays fast.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from overnight.api.openapi import openapi_document
from tests.conftest import start_server
from tests.server import ServerProcess

MAX_EXAMPLES = 15

# The document the server serves (checked equal below), loaded without a server so tests can be generated.
schema = schemathesis.openapi.from_dict(json.loads(json.dumps(openapi_document())))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_server(tmp_path_factory.mktemp("openapi"))
    yield proc
    proc.terminate_quietly()


def test_served_document_is_openapi_3_1_and_names_every_route(raw: httpx.Client) -> None:
    response = raw.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    document = response.json()
    assert document == json.loads(json.dumps(openapi_document()))
    assert document["openapi"] == "3.1.0"
    from overnight.api.dashboard import dashboard_routes
    from overnight.api.routes import routes
    from overnight.openai_api.routes import openai_routes

    api_routes = [
        *routes,
        *openai_routes,
        *(route for route in dashboard_routes if not route.path.startswith("/ui")),
    ]
    served = {
        (route.path, method.lower()) for route in api_routes for method in route.methods or () if method != "HEAD"
    }
    documented = {(path, method) for path, operations in document["paths"].items() for method in operations}
    undocumented = {(path, method) for path, method in served if not path.startswith(("/docs", "/openapi"))}
    assert undocumented == documented


def test_docs_page_loads_its_assets_from_this_server(raw: httpx.Client) -> None:
    page = raw.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert assets == ["/docs/swagger-ui.css", "/docs/swagger-ui-bundle.js"]  # no CDN
    for asset in assets:
        response = raw.get(asset)
        assert response.status_code == 200 and len(response.content) > 100_000, asset
    assert raw.get("/docs/../../pyproject.toml").status_code == 404
    assert raw.get("/docs/LICENSE").status_code == 404  # only the two assets are served


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_conforms(case: schemathesis.Case, server: ServerProcess) -> None:
    # Every check but "schema-valid request accepted": some rules JSON Schema cannot state (custom_ids
    # unique within a batch, a pagination cursor naming an existing object) rightly refuse a
    # schema-valid request with 400. Schema-violating requests must still be refused (ST201).
    case.call_and_validate(
        base_url=server.base_url, timeout=30, excluded_checks=[schemathesis.checks.positive_data_acceptance]
    )


def test_openai_operations_use_bearer_and_openais_error_envelope() -> None:
    from overnight.openai_api.errors import is_openai_path

    document = openapi_document()
    operations = [
        (path, operation)
        for path, item in document["paths"].items()
        for operation in item.values()
        if is_openai_path(path)
    ]
    assert len(operations) == 10
    for path, operation in operations:
        assert operation["security"] == [{"bearer": []}, {}], path
        for status, response in operation["responses"].items():
            schema = next(iter(response["content"].values()))["schema"]
            if status == "200":
                assert schema.get("$ref") != "#/components/schemas/OpenAIError", path
            else:
                assert schema == {"$ref": "#/components/schemas/OpenAIError"}, (path, status)


def test_an_openai_batch_run_answers_as_documented(server: ServerProcess) -> None:
    # The fuzzer's uploads are never `.jsonl` (it names files by their bytes, e.g. file.png), so it only
    # reaches the Files and Batches APIs' errors: this walks their 200s, checked against the document.
    from tests.openai.helpers import MODEL, jsonl, line

    def conforms(method: str, template: str, response: httpx.Response, status: int = 200) -> Any:
        assert response.status_code == status, response.text
        response.request.read()  # a multipart upload is streamed; schemathesis reads the request back
        schema[template][method].validate_response(response)
        return response.json() if "json" in response.headers["content-type"] else None

    with httpx.Client(base_url=server.base_url, headers={"authorization": "Bearer any"}, timeout=30) as http:
        content = jsonl([line("a", "one two"), line("b", "three", max_tokens=1)])
        uploaded = http.post("/v1/files", files={"file": ("in.jsonl", content)}, data={"purpose": "batch"})
        file = conforms("POST", "/v1/files", uploaded)
        conforms("GET", "/v1/files", http.get("/v1/files", params={"limit": 2, "order": "asc"}))
        conforms("GET", "/v1/files/{file_id}", http.get(f"/v1/files/{file['id']}"))
        created = http.post(
            "/v1/batches",
            json={"input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"},
        )
        batch = conforms("POST", "/v1/batches", created)
        for _ in range(300):
            if batch["status"] == "completed":
                break
            time.sleep(0.05)
            batch = conforms("GET", "/v1/batches/{batch_id}", http.get(f"/v1/batches/{batch['id']}"))
        assert batch["status"] == "completed" and batch["usage"] is not None, batch
        conforms("GET", "/v1/batches", http.get("/v1/batches", params={"limit": 1}))
        output = http.get(f"/v1/files/{batch['output_file_id']}/content")
        conforms("GET", "/v1/files/{file_id}/content", output)
        assert output.content.count(b"\n") == 2
        cancel = http.post(f"/v1/batches/{batch['id']}/cancel")
        conforms("POST", "/v1/batches/{batch_id}/cancel", cancel, status=409)
        deleted = http.delete(f"/v1/files/{file['id']}")
        conforms("DELETE", "/v1/files/{file_id}", deleted)
        chat = http.post("/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
        conforms("POST", "/v1/chat/completions", chat)
