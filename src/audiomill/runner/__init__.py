"""Executors: run the shards of a plan, and nothing twice."""
