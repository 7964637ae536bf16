"""Benchmarks of ssh-scale: run them all with `make bench` (bench/run_all.py)."""
