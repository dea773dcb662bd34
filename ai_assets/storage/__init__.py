"""Partition-aware table stores (Parquet, Delta Lake, LanceDB): plain Python, Arrow in and out."""
