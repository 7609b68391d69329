"""Benchmarks: embedpipe side by side with the naive recipe, on the same generated corpus."""
