"""Metrics, benchmarks and reports (grading itself is pure and lives in :mod:`tokenskip.grading`)."""
