"""Generated gRPC code for the management API (``make proto`` regenerates it
from the ``.proto`` files beside this one; do not edit the ``_pb2`` files)."""
