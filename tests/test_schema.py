"""/openapi.json tells the truth: schemathesis (on PyPI) sends 50 examples to each operation of the server's app (in
this process, with a real model), and no answer is a 5xx or off what the schema documents for it."""

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def fuzzed_app(transcriber):
    """The server's app as the fuzzer meets it (bench/schema.py too)."""
    from asrflow.server import ServerConfig, create_app

    # Starlette's test client names the server "testserver": allowed, as --allowed-host would
    return create_app(ServerConfig(max_upload_mb=2, allowed_hosts=("testserver",)), transcriber=transcriber)


@pytest.fixture(scope="module")
def app(ct2_transcriber):
    return fuzzed_app(ct2_transcriber)


def test_every_operation_answers_as_its_schema_says(app):
    from asrflow.server.openai_form import FIELDS

    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    # the form's fields are those the server reads (openai_form.FIELDS)
    form = app.openapi()["paths"]["/v1/audio/transcriptions"]["post"]["requestBody"]["content"]
    assert set(form["multipart/form-data"]["schema"]["properties"]) == FIELDS
    document = app.openapi()
    answers = {status for path in document["paths"].values() for op in path.values() for status in op["responses"]}
    assert "422" not in answers  # FastAPI's validation answer: no route here gives it
    render = document["paths"]["/render/{format}"]["post"]["parameters"][0]["schema"]
    assert render["enum"] == ["txt", "json", "srt", "vtt", "tsv", "jsonl"]  # the CLI's writers
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {f"{o.method.upper()} {o.path}" for o in operations} >= {
        "POST /v1/audio/transcriptions",
        "POST /v1/audio/translations",
        "POST /invocations",
        "POST /render/{format}",
        "GET /v1/models",
    }
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def answers(case):
            case.call_and_validate(checks=CHECKS)

        answers()


def test_no_route_and_a_wrong_method_answer_in_the_protocols_error_shape(app):
    """Found by the fuzzer: a path no route matches (a model id with a newline) got Starlette's {"detail": ...}."""
    from starlette.testclient import TestClient

    with TestClient(app) as client:
        for path in ("/v1/models/%0Awhisper", "/no/such/route"):
            answer = client.get(path)
            assert answer.status_code == 404 and answer.json()["error"]["type"] == "invalid_request_error", answer.text
        wrong = client.get("/invocations")  # MLflow's protocol, MLflow's shape
        assert wrong.status_code == 405 and wrong.json()["error_code"] == "BAD_REQUEST", wrong.text
        assert wrong.headers["allow"] == "POST"
