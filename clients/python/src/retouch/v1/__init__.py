"""Generated protobuf and gRPC stubs of the retouch.v1 contract (see protos/)."""
