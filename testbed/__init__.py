"""What the demo, the benchmarks and the tests build on: real parts on loopback, and builders.

Not shipped in the wheel. Images and registries: `ocibuild` (images built in Python, OCI
layouts), `registry` (a throwaway Distribution registry, skopeo pushes), `images` (the tests'
real images), `hostile` (archives that try to escape), `tokenserver`, `httpstub` (answers a real
registry never gives), `postgres` (a throwaway cluster). Server side: `relay`, `stack` (the whole
server against a real registry), `staging`, `trees`, `fake_cvmfs_server`. Client side:
`clientkit` and `standins/` (the runtimes that cannot run here, recording their command lines).
"""
