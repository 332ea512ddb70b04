"""Server reflection answers on both grpc.reflection.v1 and v1alpha, with comments."""

from __future__ import annotations

import pytest
from google.protobuf import descriptor_pb2
from grpc import aio
from grpc_reflection.v1alpha import reflection_pb2 as pb

VERSIONS = ("grpc.reflection.v1", "grpc.reflection.v1alpha")


async def ask(
    channel: aio.Channel, version: str, request: pb.ServerReflectionRequest
) -> pb.ServerReflectionResponse:
    # The versions differ only in their package, so v1alpha's classes speak both.
    call = channel.stream_stream(
        f"/{version}.ServerReflection/ServerReflectionInfo",
        request_serializer=pb.ServerReflectionRequest.SerializeToString,
        response_deserializer=pb.ServerReflectionResponse.FromString,
    )
    stream = call(iter([request]))
    responses = [response async for response in stream]
    assert len(responses) == 1
    return responses[0]


@pytest.mark.parametrize("version", VERSIONS)
async def test_both_versions_list_every_service(channel: aio.Channel, version: str) -> None:
    answer = await ask(channel, version, pb.ServerReflectionRequest(list_services=""))
    names = {s.name for s in answer.list_services_response.service}
    assert {
        "retouch.v1.ImageEdit",
        "retouch.v1.Account",
        "retouch.v1.Providers",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= names


@pytest.mark.parametrize("version", VERSIONS)
async def test_descriptors_carry_the_proto_comments(channel: aio.Channel, version: str) -> None:
    answer = await ask(
        channel,
        version,
        pb.ServerReflectionRequest(file_containing_symbol="retouch.v1.ImageEdit.Inpaint"),
    )
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(blob)
        for blob in answer.file_descriptor_response.file_descriptor_proto
    ]
    assert files[0].name == "retouch/v1/image_edit.proto"
    assert {"retouch/v1/common.proto", "google/protobuf/timestamp.proto"} <= {f.name for f in files}
    comments = [loc.leading_comments for loc in files[0].source_code_info.location]
    assert any("Replace the masked region of an image." in c for c in comments)


async def test_an_unknown_symbol_is_not_found(channel: aio.Channel) -> None:
    answer = await ask(
        channel, VERSIONS[0], pb.ServerReflectionRequest(file_containing_symbol="no.Such")
    )
    assert answer.error_response.error_code == 5
