"""Sinks: one output per input shard, written append-only and finished atomically.

A sink knows records and keys, never codecs or sources.
"""
