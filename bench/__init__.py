"""Benchmarks (later issues): they print figures and ratios against baselines."""
