"""The Open Inference Protocol over gRPC: KServe v2's ``inference.GRPCInferenceService``.

ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata and ModelInfer,
answered by a `grpc.aio` server on the event loop of the HTTP server (one process,
both listeners). The messages come from the protocol's published
``grpc_predict_v2.proto`` (vendored in `keras_cae.export.serving._proto` with its licence).

A thin adapter: `infer_types.InferRequest.from_grpc` turns the message into the
neutral request (typed and raw contents straight into numpy), `dataplane.DataPlane.infer`
checks and encodes it, as it does every HTTP request (the same checks, the same
messages), and `infer_types.InferResponse.to_grpc` renders the reply. A client error
is the gRPC status of `GRPC_CODES` (``NOT_FOUND`` for an unknown model or version,
``INVALID_ARGUMENT`` for everything else), never ``INTERNAL``.

Inputs arrive in ``raw_input_contents`` (little-endian bytes, as `tritonclient.grpc`
sends them) or in typed ``contents`` (``fp32_contents`` for FP32, ``fp64_contents``
for FP64; FP16 has no typed field). The output comes back in the form the input
came in: ``raw_output_contents`` for raw input, ``contents.fp32_contents`` for typed.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from keras_cae.export.serving._proto import grpc_predict_v2_pb2 as pb
from keras_cae.export.serving.dataplane import DataPlane
from keras_cae.export.serving.errors import (
    ClientClosed,
    InvalidRequest,
    NotFound,
    ServingError,
    TooLarge,
)
from keras_cae.export.serving.infer_types import InferRequest
from keras_cae.export.serving.metrics import GRPC

__all__ = ["SERVICE", "GRPC_CODES", "GrpcHandlers", "GrpcServer", "create_grpc_server"]

#: The full gRPC service name; a call is ``/inference.GRPCInferenceService/ModelInfer``.
SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
#: The gRPC status of each dataplane error: the one place they are mapped.
GRPC_CODES: dict[type[ServingError], grpc.StatusCode] = {
    InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    TooLarge: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ClientClosed: grpc.StatusCode.CANCELLED,
}
Method = Callable[[Any], Awaitable[Any]]
# Draining on stop: the server has taken every call that had arrived once it takes none
# for this many event-loop wake-ups of this many seconds.
_QUIET_TICKS, _TICK = 10, 0.005
# gRPC's message lengths are C ints.
_GRPC_MAX_LENGTH = 2**31 - 1


class GrpcHandlers:
    """The service's methods for the model of `dataplane`.

    Args:
        dataplane: the served model (``app.state.dataplane``), shared with HTTP.

    Example:

    >>> handlers = GrpcHandlers(app.state.dataplane)  # doctest: +SKIP
    """

    def __init__(self, dataplane: DataPlane) -> None:
        self.dataplane = dataplane
        metadata = dataplane.metadata
        self.metadata = pb.ModelMetadataResponse(
            name=metadata["name"],
            versions=metadata["versions"],
            platform=metadata["platform"],
            inputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in metadata["inputs"]],
            outputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in metadata["outputs"]],
        )
        self.server_metadata_response = pb.ServerMetadataResponse(**dataplane.server_metadata())

    def methods(self) -> dict[str, tuple[Method, type]]:
        """Each method name with its coroutine and request message type."""
        return {
            "ServerLive": (self.server_live, pb.ServerLiveRequest),
            "ServerReady": (self.server_ready, pb.ServerReadyRequest),
            "ModelReady": (self.model_ready, pb.ModelReadyRequest),
            "ServerMetadata": (self.server_metadata, pb.ServerMetadataRequest),
            "ModelMetadata": (self.model_metadata, pb.ModelMetadataRequest),
            "ModelInfer": (self.model_infer, pb.ModelInferRequest),
        }

    async def server_live(self, request: pb.ServerLiveRequest) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def server_ready(self, request: pb.ServerReadyRequest) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=True)

    async def model_ready(self, request: pb.ModelReadyRequest) -> pb.ModelReadyResponse:
        self.dataplane.check_model(request.name, request.version or None)
        return pb.ModelReadyResponse(ready=True)

    async def server_metadata(self, request: pb.ServerMetadataRequest) -> pb.ServerMetadataResponse:
        return self.server_metadata_response

    async def model_metadata(self, request: pb.ModelMetadataRequest) -> pb.ModelMetadataResponse:
        self.dataplane.check_model(request.name, request.version or None)
        return self.metadata

    async def model_infer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        """Encodes the request's batch; see the module docstring."""
        # An empty version, as proto3 sends an unset string, means the served one.
        self.dataplane.check_model(request.model_name, request.model_version or None)
        response = await self.dataplane.infer(InferRequest.from_grpc(request))
        return response.to_grpc()


def _rpc(name: str, method: Method, request_type: Any, metrics: Any) -> grpc.RpcMethodHandler:
    """A unary handler that parses, counts and times the call, and maps client errors.

    The request is parsed here rather than by gRPC, whose own parse failure would be
    ``INTERNAL``: a malformed message is the client's error.
    """

    async def handle(data: bytes, context: grpc.aio.ServicerContext) -> bytes:
        start = metrics.begin()
        code = grpc.StatusCode.INTERNAL  # What the client sees if the handler fails.
        try:
            try:
                request = request_type.FromString(data)
            except DecodeError as error:
                raise InvalidRequest(
                    f"The request is not a valid {name} message: {error}"
                ) from None
            reply = (await method(request)).SerializeToString()
            code = grpc.StatusCode.OK
            return reply
        except ServingError as error:
            code = GRPC_CODES[type(error)]
            await context.abort(code, error.message)
            raise AssertionError("unreachable: abort raises") from None
        except asyncio.CancelledError:  # The client cancelled or went away.
            code = grpc.StatusCode.CANCELLED
            raise
        finally:
            metrics.end(start, name, GRPC, code.name)

    return grpc.unary_unary_rpc_method_handler(handle)


class GrpcServer:
    """The `grpc.aio` server of `create_grpc_server`, and its graceful stop.

    `grpc.aio.Server.stop(grace)` alone would fail calls that a client has sent: it
    calls gRPC core's ``grpc_server_shutdown_and_notify``, which at once fails every
    call that has arrived but that the server has not taken yet (core's
    ``ZombifyPending``; the client gets ``CANCELLED``). `grpc.aio` takes one call per
    event-loop turn, so under load many arrived calls are still waiting. Then core
    stops listening and sends GOAWAY; the calls taken get `grace` seconds, after which
    they are cancelled. `stop` first lets the server take what has arrived.

    Args:
        server: the bound, not yet started, server.
        port: the port it is bound to.
        calls: counts the calls the server takes (`_CountingHandler`).

    Example:

    >>> grpc_server = create_grpc_server(app.state.dataplane, "127.0.0.1:8001",
    ...                                  1 << 20)  # doctest: +SKIP
    """

    def __init__(self, server: grpc.aio.Server, port: int, calls: _CountingHandler) -> None:
        self.server = server
        self.port = port
        self._calls = calls

    async def start(self) -> None:
        """Starts serving on the running event loop."""
        await self.server.start()

    async def stop(self, grace: float) -> None:
        """Answers the calls already sent, then stops, all within `grace` seconds.

        The server keeps taking calls until it has taken none for `_QUIET_TICKS`
        event-loop wake-ups of `_TICK` seconds (all that had arrived are taken), or for
        at most half of `grace`; then `grpc.aio.Server.stop` refuses new calls and gives
        the calls taken the rest of `grace`.
        """
        loop = asyncio.get_running_loop()
        start = loop.time()
        taken, quiet = self._calls.count, 0
        while quiet < _QUIET_TICKS and loop.time() - start < grace / 2:
            await asyncio.sleep(_TICK)
            quiet = quiet + 1 if self._calls.count == taken else 0
            taken = self._calls.count
        await self.server.stop(max(grace - (loop.time() - start), 0.0))


class _CountingHandler(grpc.GenericRpcHandler):
    """A generic handler that counts the calls gRPC hands to it, one by one."""

    def __init__(self, handler: grpc.GenericRpcHandler) -> None:
        self.handler = handler
        self.count = 0

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        self.count += 1
        return self.handler.service(handler_call_details)


def create_grpc_server(dataplane: DataPlane, address: str, max_request_bytes: int) -> GrpcServer:
    """A `grpc.aio` server for the model of `dataplane`, bound to `address` (not started).

    Call it, and ``await server.start()``, on the event loop that should run it.

    Args:
        dataplane: the served model (``app.state.dataplane``).
        address: ``host:port`` to listen on.
        max_request_bytes: the largest request message accepted (gRPC answers
            ``RESOURCE_EXHAUSTED`` beyond it). The largest reply follows from it and
            from the model: ``--max-batch`` rows of codes (4 bytes per value), plus the
            request's size (for the echoed ``id``) and 64 KiB for the envelope.

    Returns:
        The server, with the port it is bound to.

    Raises:
        ValueError: `address` cannot be bound (e.g. the port is taken).
    """
    handlers = GrpcHandlers(dataplane)
    service = dataplane
    metrics = service.metrics
    rpcs = {
        name: _rpc(name, method, request_type, metrics)
        for name, (method, request_type) in handlers.methods().items()
    }
    code_shape = service.encoder.output_shape[1:]
    code_sizes = [d for d in code_shape if isinstance(d, int) and d > 0]
    if len(code_sizes) == len(code_shape):
        codes = 4 * service.max_batch * math.prod(code_sizes)
        max_reply_bytes = min(max_request_bytes + codes + 64 * 1024, _GRPC_MAX_LENGTH)
    else:  # A dynamic code size has no bound to derive: gRPC's default, none.
        max_reply_bytes = -1
    calls = _CountingHandler(grpc.method_handlers_generic_handler(SERVICE, rpcs))
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_request_bytes),
            ("grpc.max_send_message_length", max_reply_bytes),
            # gRPC sets SO_REUSEPORT by default, which lets a second server share a
            # taken port silently; a taken port must be an error, as for HTTP.
            ("grpc.so_reuseport", 0),
        ]
    )
    server.add_generic_rpc_handlers((calls,))
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as error:
        raise ValueError(f"Cannot listen for gRPC on {address}: {error}") from None
    if port == 0:
        raise ValueError(f"Cannot listen for gRPC on {address}.")
    return GrpcServer(server, port, calls)
