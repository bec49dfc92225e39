"""Upstream channels: base URL, encrypted write-only secret, route type, priority, weight,
public label, and the mapping of public model names to upstream model ids."""
