"""Blocking classes: thin wrappers running the asyncio implementation on a private loop."""
