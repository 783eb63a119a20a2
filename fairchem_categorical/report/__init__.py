"""Reporting: metrics on predictions, plots, the ``evaluate`` report, markdown tables."""
