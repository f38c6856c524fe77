"""Organizations: the tenants (admin plane, reached only from the command line)."""
