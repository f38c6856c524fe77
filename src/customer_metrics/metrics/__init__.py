"""Metric definitions: what a metric is called and what type its values have."""
