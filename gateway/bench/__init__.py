"""Benchmarks behind `gateway bench ...`: each reports its figures as ratios to a baseline
measured in the same run, so results compare across machines."""
