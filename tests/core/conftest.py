"""Core tests: the method, data, reports and the app's line table; no fairchem needed."""
