"""Model storage: fetch a model's files onto the node before the runtime loads
them, and remove them after it unloads them."""
