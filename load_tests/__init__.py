"""Benchmarks and load generators: speed is measured here, as ratios from one
run (the mesh vs a direct call to the runtime), never by timed assertions in
tests."""
