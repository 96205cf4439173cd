"""Placement policies and baselines behind one interface (see base.py)."""
