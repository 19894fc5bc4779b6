"""Command-line interface: thin click commands that build a config and call the library."""
