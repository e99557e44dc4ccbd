"""
The chaos suite: real peers behind the fault-injecting proxy, a kernel-level
blackhole in network namespaces, and a flapping soak. C{python -m tests.chaos}
runs it and rewrites C{docs/reliability.md} from what it measured.
"""
