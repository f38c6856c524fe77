"""Import and export of metric values through the command line (CSV or NDJSON)."""
