"""customer-metrics: define metrics about customers, record their values over time, read them."""

__version__ = "0.1.0"
