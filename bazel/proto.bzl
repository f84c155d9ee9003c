"""Protobuf and gRPC C++ code generation with Debian's protoc (no downloads)."""

load("@rules_cc//cc:defs.bzl", "cc_library")

def cc_proto_grpc_library(name, src, deps = [], grpc = True, visibility = None):
    """Generates x.pb.{h,cc} (and x.grpc.pb.{h,cc}) from `src` and wraps them.

    Run from the workspace root with -I. so that outputs land exactly where the
    declared outs are and `#include "protos/x.pb.h"` resolves.
    """
    base = src[:-len(".proto")]
    outs = [base + ".pb.h", base + ".pb.cc"]
    cmd = "/usr/bin/protoc -I. --cpp_out=$(GENDIR) $(location %s)" % src
    if grpc:
        outs += [base + ".grpc.pb.h", base + ".grpc.pb.cc"]
        cmd = ("/usr/bin/protoc -I. --cpp_out=$(GENDIR) --grpc_out=$(GENDIR) " +
               "--plugin=protoc-gen-grpc=/usr/bin/grpc_cpp_plugin $(location %s)" % src)
    native.genrule(
        name = name + "_gen",
        srcs = [src],
        outs = outs,
        cmd = cmd,
    )
    cc_library(
        name = name,
        srcs = [o for o in outs if o.endswith(".cc")],
        hdrs = [o for o in outs if o.endswith(".h")],
        deps = deps + (["//bazel:grpc"] if grpc else []) + ["//bazel:protobuf"],
        visibility = visibility,
    )
