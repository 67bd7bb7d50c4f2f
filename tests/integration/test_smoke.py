import numpy as np
import tritonclient.grpc as grpcclient

from tests.support.processes import AisfProcess


def test_tritonclient_grpc_infers_tabular_demo(aisf_server: AisfProcess) -> None:
    client = grpcclient.InferenceServerClient(aisf_server.grpc_url)
    batch = grpcclient.InferInput("input__0", [2, 4], "FP32")
    batch.set_data_from_numpy(np.zeros((2, 4), dtype=np.float32))
    result = client.infer("tabular-demo", [batch])
    assert result.as_numpy("output__0").shape == (2, 1)
