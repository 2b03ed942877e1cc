"""Container runtimes that `ligoenv run` drives: Apptainer/Singularity, Docker/Podman, bubblewrap."""
