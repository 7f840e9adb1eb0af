"""Command line, pipelines, evaluation protocols, reports and benchmarks of jepa-worlds."""
