"""Checking and benchmarking support, kept apart from the layers: the op registry (input
cases and native twins), the literal reference operations, `check` and `bench`."""
