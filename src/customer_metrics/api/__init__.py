"""The HTTP edge: routing, dependencies, error rendering, middleware."""
