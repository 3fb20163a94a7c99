"""Raft replication of the event log (pysyncobj), peer discovery over headless-Service DNS.

Not built yet. It will implement :class:`registry.commit.Proposer` ("propose an event, get it
back committed"), the interface single-node mode implements with
:class:`registry.commit.LocalLog`; the registry never imports anything else from here.
"""
