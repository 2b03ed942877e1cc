"""ligoenv-server: relay, queue, worker and publishers (imported as `ligoenv_server`)."""
