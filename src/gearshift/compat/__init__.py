"""Compatibility layers for code written against other Gearman libraries."""
