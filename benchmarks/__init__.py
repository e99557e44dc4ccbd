"""
Benchmarks: netsupervisor against a hand-rolled stock Twisted baseline
(C{ClientService} plus a C{LoopingCall} heartbeat), on loopback.

Run C{python -m benchmarks --help}; the method and the latest figures are in
C{docs/performance.md}.
"""
