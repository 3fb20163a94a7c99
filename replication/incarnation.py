"""Which incarnation of a member a vote or an acknowledgement comes from.

Raft's safety rests on a vote or an acknowledgement meaning "I hold this log". A node whose disk
was lost (a deleted PVC, a replaced volume) comes back at the same address with an empty log,
and to pysyncobj it is the same member: its vote for a candidate missing a committed entry, or
its acknowledgement of entries it never held, can make that entry lost. With 3 replicas: leader
A commits an entry with C while B lags; C loses its disk and restarts; A dies; B and the empty C
elect B, and the entry is gone for good.

So every data directory has an incarnation (a random id made with its journal, see
``LmdbJournal.identity``), every vote and acknowledgement carries the sender's, and each node
keeps, durably, the incarnation it knows for every member. The rules:

* A candidate counts a vote only from the incarnation it knows for that member. A node that
  started knowing nobody (a cluster's first election: *first contact*) takes votes as they
  come, but only from voters at first contact too, until it is or hears of a leader; it
  records their incarnations only once elected (a lost round's votes, kept, would end its
  first contact at a restart while nobody has a leader, and the election could stall).
* First contact also ends, durably, when a node hears a vote request from a member that is
  past it (one that has heard of a leader, or of such a member, so may hold acknowledged
  writes). Two members whose disks were lost look exactly like two members of a new
  cluster, a majority of three; while the third member, which kept its disk and every
  acknowledged write, is up and campaigning, this keeps them from electing one of themselves
  and overwriting its log when it wins no votes (its votes from them go uncounted: the
  cluster stalls, which is what losing two of three disks should cost). It is a race, not a
  guarantee: the third member speaks only when it campaigns, to the peers it is connected to.
* A leader that hears from a member it has no incarnation for learns it (a new member, or the
  cluster's start). One that hears from a member under a new incarnation treats it as a
  newcomer: it sends it the log but does not count it toward commits until it holds the log up
  to the leader's commit index at the moment it was first seen; then the leader adopts the new
  incarnation.
* The leader sends the incarnations it knows with every append_entries; followers adopt them,
  so the next leader judges votes the same way. A node that learns from the leader that it is
  known by another incarnation (its disk was lost) does not stand for election until the
  leader's map names its own: its vote for itself would count like any other.
* Read-index confirmations (replication/read_index.py) count only from members in good
  standing, like acknowledgements: an empty member answering a deposed leader's probes must not
  make it look like the leader of a majority.

* A first contact is not taken in a hurry. Every connection between two members opens with a
  hello saying whether its sender is at first contact; one that is not ends the receiver's
  first contact, as its vote request would. A node at first contact neither stands for
  election nor grants a vote until it has heard a hello from every other member, each at
  first contact too (a new cluster, all up: at once), or a settling time has passed since it
  started (a new cluster with a member missing) that is long enough for a member that is up,
  reachable and named by DNS to connect to it: cluster DNS's and its own cached answers
  expire, stalled connects are dropped and tried again (``first_contact_wait``, or
  RAFT_FIRST_CONTACT_WAIT). A keeper whose process takes longer than that to start, or
  cluster DNS keeping a moved pod's old address longer than its default TTL, is not
  covered. The member that kept every acknowledged write speaks first on every connection,
  so two emptied members no longer elect each other while it is merely slow: after a move
  with its DNS answers cached, or when the three start together.

What this cannot see: a wiped member that no surviving node ever heard from (the leader that
first learned it died before telling anyone), and two members of three whose disks were lost
electing each other while the third is down or cut off from them for longer than the settling
time. Both take losing two nodes' state at once, beyond the one-failure budget of a 3-member
cluster, and the second looks exactly like a new cluster starting with a member missing;
a unanimous first election would close it at the price of a new cluster needing every
initial member up to start, which this registry does not pay.
"""

from __future__ import annotations

from collections.abc import Iterable

from replication.journal import LmdbJournal


class Incarnations:
    """The rules above, over the journal's durable record. Tick thread only."""

    def __init__(self, journal: LmdbJournal, self_address: str) -> None:
        self.journal = journal
        self.self_address = self_address
        self.known = journal.incarnations()
        # member -> (its new incarnation, the commit index it must reach before it counts)
        self.recovering: dict[str, tuple[str, int]] = {}
        # First contact: the incarnations voters gave this candidate, until it is elected.
        self.first_votes: dict[str, str] = {}
        # First contact: the members whose hello said they are at first contact too.
        self.heard_fresh: set[str] = set()
        # First contact: this node knows no other member, has not been or heard of a leader,
        # and has heard no member past its first contact (the journal remembers the last two).
        self.first_contact = not set(self.known) - {self_address} and not journal.first_contact_over
        if self_address not in self.known:
            self._record({**self.known, self_address: journal.identity})

    @property
    def identity(self) -> str:
        return self.journal.identity

    @property
    def recognised(self) -> bool:
        """False while the cluster knows this address by another incarnation (this node's disk
        was lost): it must not stand for election (see RaftNode._onTick)."""
        return self.known.get(self.self_address) == self.identity

    def _record(self, known: dict[str, str]) -> None:
        self.known = known
        self.journal.set_incarnations(known)

    def vote_counts(self, member: str, incarnation: object, fresh: object) -> bool:
        """Whether a candidate may count ``member``'s vote; ``fresh`` is whether the voter
        says it is at first contact."""
        known = self.known.get(member)
        if known is None and self.first_contact:
            if isinstance(incarnation, str) and fresh is True:
                # Recorded only if this node wins (``elected``): a vote of a lost round kept
                # durably would end first contact at the next restart while nobody has heard
                # of a leader, and the cluster's first election could then stall for good.
                self.first_votes[member] = incarnation
                return True
            return False
        return known is not None and known == incarnation

    def elected(self) -> None:
        """This node won an election: if it took votes at first contact, first contact is
        over for good and the voters are known by the incarnations they voted with.

        A member alone in its cluster wins without votes and stays at first contact, so that
        the first pod of a 1 -> 3 scale-up counts the votes of the pods that join it until it
        has heard from them: ended, it would count none, and a joiner whose term ran ahead
        while it waited (so that it takes no append_entries from the leader's lower term)
        would deadlock the pair (found by tests/test_cluster.py's late joiner in CI)."""
        if self.first_contact and self.first_votes:
            self.first_contact = False
            self._record({**self.first_votes, **self.known})
            self.journal.end_first_contact()
        self.first_votes = {}

    def vote_requested(self, fresh: object) -> None:
        """A vote request from a member past first contact ends this node's, durably. Its
        incarnation is not learned: it may be an emptied member that heard of the one that
        kept its disk, and counting its vote would let two emptied members elect each other
        (found by tests/test_wiped_disk.py)."""
        if self.first_contact and fresh is False:
            self.first_contact = False
            self.journal.end_first_contact()

    def hello(self, member: str, fresh: object) -> None:
        """A member's hello, the first message on every connection between two members: one
        past its first contact ends this node's, as its vote request would."""
        if fresh is True:
            self.heard_fresh.add(member)
        self.vote_requested(fresh)

    def restore_mismatch(self, theirs: object, fresh: object) -> bool:
        """Whether a member's hello, saying it was restored from ``theirs`` ("" for none) and
        whether it is at first contact, shows this node's restore does not match the cluster.

        A member restored from a backup on its own, started while every other member was
        down, finds no cluster to compare with at its start (RaftProposer.start), and once it
        has followed the running cluster its log no longer looks restored: that cluster would
        replace the backup's view with its own, the operator believing it restored. So while
        a restored node is at first contact, a hello from a member of a running cluster (past
        first contact) or of another restore, not restored from the same backup, is a
        mismatch. A new, empty member at first contact is not (it will take the restored
        log), nor a peer that does not say (an older version)."""
        ours = self.journal.restored_from
        return (
            bool(ours)
            and self.first_contact
            and isinstance(theirs, str)
            and theirs != ours
            and (fresh is False or bool(theirs))
        )

    def settled(self, others: Iterable[str], waited: bool) -> bool:
        """Whether this node may stand for election and grant votes: past first contact, or
        at it and it heard a fresh hello from every other member, or ``waited`` (the settling
        time since it started has passed)."""
        return not self.first_contact or waited or self.heard_fresh.issuperset(others)

    def ack_counts(self, member: str, incarnation: object, matched: int, last: int) -> bool:
        """Whether a leader may count ``member``'s acknowledgement that it holds the log up to
        ``matched``, ``last`` being the leader's last log index now. (Its last index, not its
        commit index: entries committed with the old incarnation's acknowledgements can lie
        above a new leader's commit index, and a leader's log holds every committed entry.)"""
        if not isinstance(incarnation, str):
            return False
        self.first_contact = False
        known = self.known.get(member)
        if known == incarnation:
            # Caught up under an earlier leader, which told this node (``adopt``): no longer a
            # newcomer here either.
            self.recovering.pop(member, None)
            return True
        if known is None:
            self._record({**self.known, member: incarnation})
            return True
        pending = self.recovering.get(member)
        if pending is None or pending[0] != incarnation:
            pending = self.recovering[member] = (incarnation, last)
        if matched < pending[1]:
            return False
        del self.recovering[member]
        self._record({**self.known, member: incarnation})
        return True

    def counted(self, member: str) -> bool:
        """False while ``member`` is a new incarnation still catching up (leader only)."""
        return member not in self.recovering

    def in_good_standing(self, member: str, incarnation: object) -> bool:
        """Leader: whether ``member``'s answer (a read-index confirmation) may count: from the
        incarnation it knows, and not one still catching up."""
        known = self.known.get(member)
        return known is not None and known == incarnation and self.counted(member)

    def adopt(self, leaders: object) -> None:
        """Follower: take the incarnations the leader of the current term sent. Hearing a
        leader ends first contact even when it sent none (a leader of an older version, in a
        rolling upgrade): otherwise this node would count only fresh votes for good, and no
        member past first contact sends one."""
        self.first_contact = False
        if not isinstance(leaders, dict):
            return
        merged = dict(self.known)
        for member, incarnation in leaders.items():
            # Also this node's own entry: another incarnation there means the cluster has not
            # recognised this one yet (see ``recognised``).
            if isinstance(member, str) and isinstance(incarnation, str):
                merged[member] = incarnation
        if merged != self.known:
            self._record(merged)
