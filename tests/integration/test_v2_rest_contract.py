"""V2 REST answers as the spec and Triton do: numbers for shapes, typed JSON errors, documented statuses."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support.processes import AisfProcess

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def rest(aisf_server: AisfProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://{aisf_server.http_url}", timeout=10) as client:
        yield client


def test_model_metadata_and_config_carry_shapes_and_dims_as_numbers(rest: httpx.Client) -> None:
    metadata = rest.get("/v2/models/tabular-demo").json()
    assert metadata["inputs"][0]["shape"] == [-1, 4] and metadata["outputs"][0]["shape"] == [-1, 1]
    config = rest.get("/v2/models/tabular-demo/config").json()
    assert config["input"][0]["dims"] == [4] and config["max_batch_size"] == 64
    stats = rest.get("/v2/models/tabular-demo/stats").json()["model_stats"][0]
    assert isinstance(stats["inference_stats"]["success"]["count"], int)


def test_readiness_of_an_unknown_model_is_a_404_with_the_v2_error_body(rest: httpx.Client) -> None:
    """The landed main answered 503 with an empty body, as if the model existed but was not ready."""
    response = rest.get("/v2/models/no-such-model/ready")
    assert response.status_code == 404 and "unknown model 'no-such-model'" in response.json()["error"]
    response = rest.get("/v2/models/tabular-demo/versions/9/ready")
    assert response.status_code == 404 and "no ready version 9" in response.json()["error"]
    assert rest.get("/v2/models/tabular-demo/ready").status_code == 200


def test_the_openapi_document_lists_the_error_statuses_routes_answer(rest: httpx.Client) -> None:
    document = rest.get("/openapi.json").json()
    paths = document["paths"]
    infer = paths["/v2/models/{model}/infer"]["post"]["responses"]
    assert {"400", "404", "413", "429", "503", "504"} <= set(infer)
    body = infer["429"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    assert "error" in document["components"]["schemas"][body]["properties"]
    assert {"400", "404"} <= set(paths["/v2/models/{model}"]["get"]["responses"])
    assert {"400", "404", "429", "503"} <= set(paths["/v1/chat/completions"]["post"]["responses"])
    assert {"400", "404", "413", "503"} <= set(paths["/v1/jobs"]["post"]["responses"])
    # Validation errors are answered 400 with the edge's own body: no route promises FastAPI's 422.
    assert all("422" not in op["responses"] for ops in paths.values() for op in ops.values())
    upload = paths["/v1/files"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert set(upload["required"]) == {"file", "purpose"}
