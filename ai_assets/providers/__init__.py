"""Providers: one small Protocol per capability, one module per backend."""
