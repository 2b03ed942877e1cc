"""The `ligoenv` command line: thin modules that parse, call the core and print."""
