"""What the demo, the benchmarks and the tests build on; not shipped in the wheel.

`ocibuild` makes images in Python and writes OCI layouts; `registry` starts a throwaway
Distribution registry on a loopback port and pushes layouts to it with skopeo.
"""
