"""Command-line interface; see ``metaloop --help``."""
