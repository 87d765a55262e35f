"""UNIX socket helpers shared by the raw client and the reference server.

* ``busy_poll``: adaptive polling before a blocking receive (``BusyPoll``), none on a
  crowded machine (``RunQueue``).
* ``scm_rights``: fds passed with SCM_RIGHTS (``rights``, ``fds_of``, ``SCM_MAX_FD``), and
  what one is (``fd_kind``).
* ``outq``: what the peer has not read yet (``unread``, ``wait_read``).
* ``bound``: which sockets are bound to a socket file, without connecting
  (``sockets_bound_to``, ``BoundSocket``).

May import: the standard library only.
"""

from .bound import BoundSocket, sockets_bound_to
from .busy_poll import CEILING_NS, GROW_START_NS, MIN_NS, BusyPoll, RunQueue, runnable_tasks
from .outq import unread, wait_read
from .scm_rights import ANC_SPACE, SCM_MAX_FD, fd_kind, fds_of, rights

__all__ = [
    "ANC_SPACE",
    "BoundSocket",
    "CEILING_NS",
    "GROW_START_NS",
    "MIN_NS",
    "SCM_MAX_FD",
    "BusyPoll",
    "RunQueue",
    "fd_kind",
    "fds_of",
    "rights",
    "runnable_tasks",
    "sockets_bound_to",
    "unread",
    "wait_read",
]
