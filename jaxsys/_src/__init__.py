"""Internal helpers shared by every technique: configs, benchmarks, reports, tests."""
