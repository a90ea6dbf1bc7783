"""Benchmarks: `python -m bench [name ...]` runs each bench/<name>.py's main()."""
