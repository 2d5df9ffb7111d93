"""The one import facade for code generated from the contracts in this folder.

Hand-written code imports messages and stubs from here, never from protos/gen,
so that moving or regenerating the generated tree touches one file.
`validate_pb2` contains the protovalidate annotations (`buf.validate.field`) with
which the contracts declare field limits.
"""

from buf.validate import validate_pb2
from mesh.counter.v1 import counter_pb2, counter_pb2_grpc
from mesh.user.v1 import user_pb2, user_pb2_grpc

__all__ = [
    "counter_pb2",
    "counter_pb2_grpc",
    "user_pb2",
    "user_pb2_grpc",
    "validate_pb2",
]
