"""Scripts that reproduce the figures of BENCHMARKS.md, each run as `python -m experiments.benchmarks.NAME`."""
