"""Benchmarks of the agent-loop workload (:mod:`.workload`); run them with ``python -m``."""
