"""Tooling around the product: the local service launcher, the demo, benchmarks, the alert
evaluation, the DuckDB reference and screenshots. Runtime code never imports this package."""
