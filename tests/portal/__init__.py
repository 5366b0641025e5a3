"""Tests of the compliance portal (services/portal)."""
