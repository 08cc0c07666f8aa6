"""Regenerates ``grpc_predict_v2_pb2.py`` and its type stub ``grpc_predict_v2_pb2.pyi``
from ``grpc_predict_v2.proto``.

The generated module and stub are committed, so that a service host needs only `protobuf`
at run time, not the compiler. After changing the ``.proto`` (or to move to another
protobuf major version), run from the repository root, in an environment with
``pip install "grpcio-tools==1.76.0" "protobuf>=6.31.1,<7"``:

    python export/serving/_proto/generate.py

The messages are built in a descriptor pool of their own rather than protobuf's
default pool: Triton's client (`tritonclient.grpc`) defines the same ``inference.*``
names in its ``grpc_service.proto``, and two definitions of a name in one pool fail
at import, so that the server and Triton's client could not share a process.
"""

from __future__ import annotations

import os
import sys

__all__: list[str] = []

_HERE = os.path.dirname(os.path.abspath(__file__))
_DEFAULT_POOL = "_descriptor_pool.Default().AddSerializedFile("
_OWN_POOL = "_descriptor_pool.DescriptorPool().AddSerializedFile("


def main() -> int:
    from grpc_tools import protoc

    name = "grpc_predict_v2"
    arguments = [f"-I{_HERE}", f"--python_out={_HERE}", f"--pyi_out={_HERE}", f"{name}.proto"]
    if protoc.main(["protoc", *arguments]) != 0:
        return 1
    path = os.path.join(_HERE, f"{name}_pb2.py")
    with open(path, encoding="utf-8") as file:
        text = file.read()
    if text.count(_DEFAULT_POOL) != 1:
        print(f"{path}: expected one {_DEFAULT_POOL!r}; protoc's output changed.", file=sys.stderr)
        return 1
    with open(path, "w", encoding="utf-8") as file:
        file.write(text.replace(_DEFAULT_POOL, _OWN_POOL))
    return 0


if __name__ == "__main__":
    sys.exit(main())
