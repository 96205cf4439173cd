"""What-if simulation: request-level latency on one device (:mod:`.requests`).

The event-driven placement replay lives in ``replay.py`` beside it.
"""
