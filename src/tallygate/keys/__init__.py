"""API keys: shown once, stored as a hash, with scopes (model globs, route types) and limits."""
