"""Upstream sources: the only owners of remote URL and JSON shapes."""
