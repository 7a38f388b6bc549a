"""Validation: generating maps from a trained run, and (next) the statistics report."""
