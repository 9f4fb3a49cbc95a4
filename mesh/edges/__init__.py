"""The transports over a node: everything that speaks a wire protocol or starts a process.

The management, admin and peer gRPC services, the error-to-status table,
peer channels, TLS files and credentials, the operator's HTTP ports, payload
logging, the process environment and child processes. Each wraps a
transport-free object from :mod:`mesh.node`.
"""
