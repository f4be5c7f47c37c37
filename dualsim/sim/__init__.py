"""Simulators: the abstract (cost-based) engine and the SimPy hardware engine."""
