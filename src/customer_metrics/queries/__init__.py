"""Queries across customers: segment search, summaries and time series."""
