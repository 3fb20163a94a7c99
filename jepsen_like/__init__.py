"""Jepsen-style evidence for the registry: histories of client operations, and checkers.

Pieces, as in Jepsen: ``history`` (operations as data), ``linearizability`` (a Wing-Gong
search per agent), ``checkers`` (lost writes, linearizability, convergence, availability,
health). The checkers come first and are tested on hand-made histories known to be right or
wrong, so a green run means something.
"""
