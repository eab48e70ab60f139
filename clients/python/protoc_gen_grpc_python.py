"""A protoc plugin that runs grpcio-tools' grpc_python generator.

grpcio-tools ships the grpc_python generator built into its own protoc
(`python -m grpc_tools.protoc --grpc_python_out=...`), not as a plugin
binary, so buf cannot call it directly. This plugin receives buf's
CodeGeneratorRequest, hands its descriptors to that protoc
(`--descriptor_set_in`), and returns the files it wrote.
"""

import os
import sys
import tempfile

from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2
from grpc_tools import protoc


def main() -> None:
    request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    response = plugin_pb2.CodeGeneratorResponse(
        supported_features=plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
    )
    with tempfile.TemporaryDirectory() as work:
        descriptors = os.path.join(work, "descriptors.binpb")
        with open(descriptors, "wb") as f:
            # proto_file holds every file to generate and all its imports.
            f.write(descriptor_pb2.FileDescriptorSet(file=request.proto_file).SerializeToString())
        out = os.path.join(work, "out")
        os.mkdir(out)
        opt = f"{request.parameter}:" if request.parameter else ""
        args = [
            "grpc_tools.protoc",
            f"--descriptor_set_in={descriptors}",
            f"--grpc_python_out={opt}{out}",
            *request.file_to_generate,
        ]
        if protoc.main(args) != 0:
            response.error = "grpc_tools.protoc --grpc_python_out failed (its message is above)"
        for root, _, files in os.walk(out):
            for name in sorted(files):
                path = os.path.join(root, name)
                with open(path, encoding="utf-8") as f:
                    response.file.add(name=os.path.relpath(path, out), content=f.read())
    sys.stdout.buffer.write(response.SerializeToString())


if __name__ == "__main__":
    main()
