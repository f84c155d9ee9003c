"""Generated protobuf/gRPC stubs of protos/*.proto (`make python`)."""
