"""Pure rules and records: what the mesh decides, with no I/O.

Everything here is a function of its arguments or a frozen dataclass with
explicit JSON. An import-linter contract forbids every I/O library here, so
the rules can be tested, simulated and reasoned about without a process.
"""
