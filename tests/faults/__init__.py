"""Fault-injection suite (issue 12): the extender under restarts, expiry, outages and slow APIs.

Shared pieces: :mod:`tests.faults.invariants` (the properties every fault test asserts) and
:mod:`tests.faults.conftest` (fixtures). Each test names the fault it injects and the guarantee of
``docs/reliability.md`` it shows.
"""
