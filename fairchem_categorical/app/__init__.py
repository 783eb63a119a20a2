"""The application: the command line, the demo, and the one place a fairchem line is chosen.

Nothing in the package imports it; it imports the core, the reports and the adapters.
"""
