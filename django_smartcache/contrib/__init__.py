"""Integrations with third-party packages; each subpackage imports its package, nothing else does."""
