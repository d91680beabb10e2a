"""The PNS fault-injection suite and the memory/leak soak (issue 7, parts 2 and 3).

Every fault starts real processes (``pnsd``, ``pnsweb``, workers) under a private temporary
directory, talks to them over loopback TCP or ipc:// only, injects one kind of trouble (real
signals, a full tmpfs, garbage on the wire, slow sockets), and reports one
:class:`faults.report.Row`: tries, requests sent, requests that failed although they should not
have, and acknowledged data lost. Every load is bounded in count and time, and every process a
fault starts is stopped on a ladder (SIGTERM, grace, SIGKILL on the process group); afterwards
``/proc`` is searched for leftovers, which fail the row.

Run it with ``python -m faults`` (``--quick``, ``--only NAMES``, ``--soak``, ``--list``). This
package is a test harness: it drives the product only through its command lines, sockets and
``protocols``; it never imports ``pnsd`` or ``pnsweb``.
"""
