"""Inspect: status, summary, report, verify, the neuroglancer view."""
