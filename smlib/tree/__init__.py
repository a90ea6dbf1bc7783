"""Snapshot / clone / revert / delete over any store: journal steps, GC, metadata, the SR lock."""
