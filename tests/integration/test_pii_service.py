"""`aisf serve --role pii` for real: aisf.pii.v1.PiiService over gRPC on the Korean/English corpus, and typed
errors naming the field."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from aisf.pii.v1 import pii_service_pb2 as pb
from aisf.pii.v1 import pii_service_pb2_grpc as pb_grpc
from tests.support.pii_corpus import CORPUS, labelled_spans
from tests.support.processes import AisfProcess, running_aisf


@pytest.fixture(scope="module")
def server(sample_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AisfProcess]:
    with running_aisf(sample_repository, tmp_path_factory.mktemp("data"), role="pii") as process:
        yield process


@pytest.fixture(scope="module")
def pii(server: AisfProcess) -> Iterator[pb_grpc.PiiServiceStub]:
    with grpc.insecure_channel(server.grpc_url) as channel:
        yield pb_grpc.PiiServiceStub(channel)


def test_detect_finds_every_labelled_span_of_the_corpus_in_one_call(pii: pb_grpc.PiiServiceStub) -> None:
    answer = pii.Detect(pb.DetectRequest(texts=[text for text, _ in CORPUS]), timeout=120)
    assert len(answer.results) == len(CORPUS)
    for (text, labels), result in zip(CORPUS, answer.results, strict=True):
        found = {(f.entity_type, f.start, f.end) for f in result.findings}
        assert found == set(labelled_spans(text, labels)), text
        assert all(0.5 <= f.score <= 1 for f in result.findings)


def test_redact_replaces_personal_data_and_keeps_the_rest(pii: pb_grpc.PiiServiceStub) -> None:
    texts = ["김민수 고객님 연락처 010-1234-5678", "Order 20241201-0001 shipped"]
    answer = pii.Redact(pb.RedactRequest(texts=texts), timeout=120)
    assert list(answer.texts) == ["<PERSON> 고객님 연락처 <PHONE_NUMBER>", "Order 20241201-0001 shipped"]
    assert [f.entity_type for f in answer.results[0].findings] == ["PERSON", "PHONE_NUMBER"]


def test_language_and_entities_narrow_what_is_looked_for(pii: pb_grpc.PiiServiceStub) -> None:
    answer = pii.Redact(
        pb.RedactRequest(texts=["김민수 고객님 010-1234-5678"], entities=["PHONE_NUMBER"], language="ko"),
        timeout=120,
    )
    assert list(answer.texts) == ["김민수 고객님 <PHONE_NUMBER>"]


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.DetectRequest(texts=["x"], language="fr"), "language"),
        (pb.DetectRequest(texts=["x"], entities=["SHOE_SIZE"]), "entities"),
        (pb.DetectRequest(texts=[]), "texts"),
        (pb.DetectRequest(texts=["x"] * 257), "texts"),
        (pb.DetectRequest(texts=["x"], min_score=2), "min_score"),
    ],
)
def test_bad_requests_are_invalid_argument_naming_the_field(
    pii: pb_grpc.PiiServiceStub, request_: pb.DetectRequest, field: str
) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        pii.Detect(request_, timeout=120)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert refused.value.details().startswith(field)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def everything(sample_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AisfProcess]:
    """`--role all` with its pii role: the log handler redacts through it."""
    env = {"AISF_PII_SERVICE": "true"}
    with running_aisf(sample_repository, tmp_path_factory.mktemp("data"), env=env) as process:
        yield process


def test_the_logs_of_a_request_carrying_personal_data_hold_none_of_it(everything: AisfProcess) -> None:
    everything.wait_logged("pii analyzer ready")
    client = grpcclient.InferenceServerClient(everything.grpc_url)
    tensor = grpcclient.InferInput("input__0", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.ones((1, 4), np.float32))
    for name in ("call 010-1234-5678", "mail jane.doe@example.com", "주민번호 900101-1234568"):
        with pytest.raises(InferenceServerException, match="unknown model"):
            client.infer(name, [tensor])
    client.close()
    logs = everything.wait_logged("<KR_RRN>")
    assert "<PHONE_NUMBER>" in logs and "<EMAIL_ADDRESS>" in logs
    for raw in ("010-1234-5678", "jane.doe@example.com", "900101-1234568"):
        assert raw not in logs
