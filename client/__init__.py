"""Python client for the caption server: a small streaming library and a command-line tool."""
