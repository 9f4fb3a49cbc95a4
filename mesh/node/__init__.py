"""What a node does, free of any transport.

Its model cache, the routing loop, the management API's logic and its
cluster tasks (membership, leadership, janitor, scaler, hand-over on
drain), with the instruments they report through (metrics, logs). The gRPC
and HTTP edges in :mod:`mesh.edges` wrap these objects.
"""
