"""Server reflection, ``grpc.reflection.v1`` and ``v1alpha``, with the contract's comments.

grpcio-reflection serves only v1alpha, and from the process's descriptor pool, whose
descriptors lost their source info when the stubs were generated: ``grpcurl describe``
showed no comments. Here the descriptors come from ``retouch/v1/descriptors.binpb``,
which ``make gen`` writes with ``--include_source_info``, and both versions of the
service answer from them. The two versions' messages are the same on the wire (only
the package differs), so one implementation over the v1alpha classes serves both.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from importlib import resources
from typing import Any

import grpc
from google.protobuf import descriptor_pb2
from grpc import aio
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2 as pb
from grpc_reflection.v1alpha import reflection_pb2_grpc

V1ALPHA = "grpc.reflection.v1alpha.ServerReflection"
V1 = "grpc.reflection.v1.ServerReflection"
SERVICE_NAMES = (V1, V1ALPHA)
DESCRIPTOR_SET = "descriptors.binpb"


def load_files() -> dict[str, descriptor_pb2.FileDescriptorProto]:
    """Every file reflection can describe, by name: the contract with its comments and
    imports, health, and both reflection versions."""
    blob = resources.files("retouch.v1").joinpath(DESCRIPTOR_SET).read_bytes()
    files = {f.name: f for f in descriptor_pb2.FileDescriptorSet.FromString(blob).file}
    for module in (health_pb2, pb):
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        files[proto.name] = proto
    v1 = descriptor_pb2.FileDescriptorProto()
    v1.CopyFrom(files[pb.DESCRIPTOR.name])
    v1.name = "grpc/reflection/v1/reflection.proto"
    v1.package = "grpc.reflection.v1"
    v1.options.Clear()
    files[v1.name] = v1
    return files


class _Index:
    """Which file defines each symbol, and each file's serialized form."""

    def __init__(self, files: Mapping[str, descriptor_pb2.FileDescriptorProto]) -> None:
        self.files = dict(files)
        self.serialized = {name: f.SerializeToString() for name, f in files.items()}
        self.symbols: dict[str, str] = {}
        self.extensions: dict[str, dict[int, str]] = {}
        for name, proto in files.items():
            prefix = f"{proto.package}." if proto.package else ""
            for service in proto.service:
                self.symbols[prefix + service.name] = name
                for method in service.method:
                    self.symbols[f"{prefix}{service.name}.{method.name}"] = name
            for enum in proto.enum_type:
                self.symbols[prefix + enum.name] = name
            for extension in proto.extension:
                target = extension.extendee.lstrip(".")
                self.extensions.setdefault(target, {})[extension.number] = name
            self._messages(proto.message_type, prefix, name)

    def _messages(
        self, messages: Iterable[descriptor_pb2.DescriptorProto], prefix: str, file: str
    ) -> None:
        for message in messages:
            full = prefix + message.name
            self.symbols[full] = file
            for enum in message.enum_type:
                self.symbols[f"{full}.{enum.name}"] = file
            self._messages(message.nested_type, full + ".", file)

    def with_dependencies(self, name: str) -> list[bytes]:
        """``name`` first, then every file it imports, transitively."""
        ordered: list[str] = []
        pending = [name]
        while pending:
            current = pending.pop()
            if current in ordered or current not in self.files:
                continue
            ordered.append(current)
            pending.extend(self.files[current].dependency)
        return [self.serialized[n] for n in ordered]


class ReflectionServicer(reflection_pb2_grpc.ServerReflectionServicer):
    """Answers reflection requests for ``service_names`` from the files it was given."""

    def __init__(
        self,
        service_names: Iterable[str],
        files: Mapping[str, descriptor_pb2.FileDescriptorProto] | None = None,
    ) -> None:
        self._services = sorted(service_names)
        self._index = _Index(load_files() if files is None else files)

    async def ServerReflectionInfo(
        self,
        request_iterator: AsyncIterator[pb.ServerReflectionRequest],
        context: aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[pb.ServerReflectionResponse]:
        """One response per request, in order, for as long as the client asks."""
        async for request in request_iterator:
            yield self._answer(request)

    def _answer(self, request: pb.ServerReflectionRequest) -> pb.ServerReflectionResponse:
        asked = request.WhichOneof("message_request")
        file: str | None = None
        if asked == "list_services":
            return pb.ServerReflectionResponse(
                original_request=request,
                list_services_response=pb.ListServiceResponse(
                    service=[pb.ServiceResponse(name=name) for name in self._services]
                ),
            )
        if asked == "file_by_filename":
            file = (
                request.file_by_filename if request.file_by_filename in self._index.files else None
            )
        elif asked == "file_containing_symbol":
            file = self._index.symbols.get(request.file_containing_symbol)
        elif asked == "file_containing_extension":
            wanted = request.file_containing_extension
            file = self._index.extensions.get(wanted.containing_type, {}).get(
                wanted.extension_number
            )
        elif asked == "all_extension_numbers_of_type":
            type_name = request.all_extension_numbers_of_type
            if type_name in self._index.symbols:
                return pb.ServerReflectionResponse(
                    original_request=request,
                    all_extension_numbers_response=pb.ExtensionNumberResponse(
                        base_type_name=type_name,
                        extension_number=sorted(self._index.extensions.get(type_name, {})),
                    ),
                )
        if file is None:
            return _error(request, grpc.StatusCode.NOT_FOUND, "not found")
        return pb.ServerReflectionResponse(
            original_request=request,
            file_descriptor_response=pb.FileDescriptorResponse(
                file_descriptor_proto=self._index.with_dependencies(file)
            ),
        )


def _error(
    request: pb.ServerReflectionRequest, code: grpc.StatusCode, message: str
) -> pb.ServerReflectionResponse:
    return pb.ServerReflectionResponse(
        original_request=request,
        error_response=pb.ErrorResponse(error_code=code.value[0], error_message=message),
    )


def enable_reflection(service_names: Iterable[str], server: aio.Server) -> None:
    """Serve reflection, v1 and v1alpha, for ``service_names`` (both reflection
    services are added to the list)."""
    servicer = ReflectionServicer([*service_names, *SERVICE_NAMES])
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    v1 = grpc.method_handlers_generic_handler(
        V1,
        {
            "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                servicer.ServerReflectionInfo,
                request_deserializer=pb.ServerReflectionRequest.FromString,
                response_serializer=pb.ServerReflectionResponse.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((v1,))


__all__ = ["SERVICE_NAMES", "ReflectionServicer", "enable_reflection", "load_files"]
