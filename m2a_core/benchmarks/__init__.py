"""Benchmarks behind ``m2a bench``: each prints numbers, none asserts timings."""
