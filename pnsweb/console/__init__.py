"""The operator console: a browser UI at ``/console`` for the node, its PTS, jobs, plots and
deploys, served by pnsweb as an aiohttp sub-application (:mod:`pnsweb.console.routes`).

Parts: :mod:`~pnsweb.console.sessions` (sign-in, the same-origin rule, page headers),
:mod:`~pnsweb.console.views` (node, PTS, plots, steering; administrators only),
:mod:`~pnsweb.console.jobs` (jobs, each user their own) and ``static/`` (the page). It reaches
the daemon only through the app's client, as the rest of pnsweb does.
"""

from pnsweb.console.routes import face, to_page

__all__ = ["face", "to_page"]
