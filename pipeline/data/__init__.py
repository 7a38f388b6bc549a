"""Datasets on disk: shards, manifest, making, importing, verifying, loading."""
