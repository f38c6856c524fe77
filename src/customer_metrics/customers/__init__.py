"""Customers: the organization's own ids for the accounts whose metrics are recorded."""
