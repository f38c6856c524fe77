"""Metric values: observations over time, the current value, increments and history."""
