"""Storage: engine, tables, dialect differences and migrations. The only home of SQL."""
