"""The Open Inference Protocol's gRPC messages (KServe v2), generated from its proto.

``grpc_predict_v2.proto`` is vendored unchanged from KServe
(github.com/kserve/kserve, ``docs/predict-api/v2/grpc_predict_v2.proto`` at commit
aaac4e294dae2c7b1aa1886447793f3aa1c30912), under the Apache License 2.0 (``LICENSE``
here). ``grpc_predict_v2_pb2.py`` and its type stub ``grpc_predict_v2_pb2.pyi`` are
generated from it and committed; ``generate.py`` regenerates them.
"""

__all__: list[str] = []
