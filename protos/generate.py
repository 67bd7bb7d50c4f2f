"""Generate every protobuf artifact of the project: `python protos/generate.py`.

Writes the Python stubs for protos/aisf/**.proto beside their sources (importable by
proto package, e.g. `aisf.router.v1`) and exports the KServe V2 / Triton contract that
tritonclient ships as a FileDescriptorSet (protos/inference/grpc_service.binpb) for
clients in other languages. CI reruns this and fails when the tree changes.
"""

from __future__ import annotations

import sys
from pathlib import Path

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FileDescriptor
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent
V2_DESCRIPTOR_SET = ROOT / "inference" / "grpc_service.binpb"


def generate_python_stubs() -> None:
    sources = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "aisf").rglob("*.proto"))
    include = str(Path(protoc.__file__).parent / "_proto")
    plugins = Path(sys.executable).parent
    args = [
        "protoc",
        f"-I{ROOT}",
        f"-I{include}",
        f"--plugin=protoc-gen-mypy={plugins / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={plugins / 'protoc-gen-mypy_grpc'}",
        f"--python_out={ROOT}",
        f"--mypy_out={ROOT}",
        f"--grpc_python_out={ROOT}",
        f"--mypy_grpc_out={ROOT}",
        *sources,
    ]
    if protoc.main(args) != 0:
        sys.exit("protoc failed")
    for package_dir in {(ROOT / s).parent for s in sources}:
        while package_dir != ROOT:
            (package_dir / "__init__.py").touch()
            package_dir = package_dir.parent


def _with_dependencies(files: list[FileDescriptor]) -> list[FileDescriptor]:
    ordered: list[FileDescriptor] = []

    def visit(file: FileDescriptor) -> None:
        if file in ordered:
            return
        for dependency in file.dependencies:
            visit(dependency)
        ordered.append(file)

    for file in files:
        visit(file)
    return ordered


def export_v2_descriptor_set() -> None:
    from tritonclient.grpc import service_pb2

    descriptor_set = descriptor_pb2.FileDescriptorSet()
    for file in _with_dependencies([service_pb2.DESCRIPTOR]):
        file.CopyToProto(descriptor_set.file.add())
    V2_DESCRIPTOR_SET.parent.mkdir(exist_ok=True)
    V2_DESCRIPTOR_SET.write_bytes(descriptor_set.SerializeToString(deterministic=True))


if __name__ == "__main__":
    generate_python_stubs()
    export_v2_descriptor_set()
