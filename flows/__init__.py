"""Prefect flows: `curate` (parent) and its arm subflow."""
