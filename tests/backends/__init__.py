"""Tests of the Django backends."""
