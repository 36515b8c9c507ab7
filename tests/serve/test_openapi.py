"""/openapi.json: every route, with its request model as the JSON body (the fuzzer reads it)."""

from __future__ import annotations


def test_every_body_route_has_its_schema(client):
    doc = client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    schemas = doc["components"]["schemas"]
    for path in ("/infill", "/completion", "/completions", "/v1/completions", "/v1/chat/completions",
                 "/chat/completions", "/v1/fim/completions", "/api/generate", "/api/chat", "/api/show",
                 "/tokenize", "/detokenize", "/apply-template"):
        body = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        name = body["$ref"].rsplit("/", 1)[1]
        assert name in schemas, path
    infill = schemas[doc["paths"]["/infill"]["post"]["requestBody"]["content"]["application/json"]["schema"]
                     ["$ref"].rsplit("/", 1)[1]]
    assert {"input_prefix", "input_suffix"} <= set(infill["required"])
    for path in ("/v1/models", "/models", "/props", "/slots", "/api/tags", "/health"):
        assert "get" in doc["paths"][path], path
