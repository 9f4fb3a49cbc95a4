"""The V2 data plane: read the model id off the wire, resolve it, rewrite it,
and forward the raw request bytes to the runtime that holds the model."""
