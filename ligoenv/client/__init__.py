"""The client library behind the `ligoenv` command: settings, resolving and locking, archives,
waiting for publication, and the container runtimes. Imports the store and the core below it."""
