"""Generate Python code, .pyi stubs and Envoy's descriptor set from proto/.

Usage: python tools/genproto.py [OUT_ROOT]   (default: server/)
The generated package is `modelyard.v1` under OUT_ROOT; never edit it by hand.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
PACKAGE = Path("modelyard") / "v1"
DESCRIPTOR_NAME = "modelyard.pb"
RPC_DETAIL_PROTOS = ("google/rpc/status.proto", "google/rpc/error_details.proto")


def _include_dirs() -> list[str]:
    grpc_tools_protos = resources.files("grpc_tools") / "_proto"
    import google.api  # googleapis-common-protos ships the google/api and google/rpc .proto files

    googleapis = Path(google.api.__path__[0]).parent.parent
    return [str(PROTO_DIR), str(grpc_tools_protos), str(googleapis)]


def generate(out_root: Path) -> None:
    out_pkg = out_root / PACKAGE
    out_pkg.mkdir(parents=True, exist_ok=True)
    sources = sorted(str(p.relative_to(PROTO_DIR)) for p in (PROTO_DIR / PACKAGE).glob("*.proto"))
    includes = [f"-I{d}" for d in _include_dirs()]
    bin_dir = Path(sys.executable).parent
    args = [
        "protoc",
        *includes,
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    # Envoy's transcoder renders google.rpc details only for types inside its descriptor set.
    descriptor_args = [
        "protoc",
        *includes,
        "--include_imports",
        f"--descriptor_set_out={out_pkg / DESCRIPTOR_NAME}",
        *sources,
        *RPC_DETAIL_PROTOS,
    ]
    if protoc.main(descriptor_args) != 0:
        raise SystemExit("protoc failed (descriptor set)")
    (out_pkg / "__init__.py").write_text(
        '"""Generated from proto/modelyard/v1 by `make proto`. Do not edit."""\n'
    )


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "server")
