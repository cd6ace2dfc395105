"""The management HTTP API: live calls, gateways, accounts, balances, statistics, routing,
CDRs and ``/metrics``, served by the switch itself (``[management]``).

One module per job:

    app         the aiohttp application and its server's start and stop (why aiohttp)
    table       the route table: each endpoint once, with its description; query helpers
    openapi     the OpenAPI 3 description, generated from the table
    errors      JSON errors, never a traceback
    auth        the bearer token
    calls       live calls; hanging one up
    gateways    state, health; enable/disable at run time
    accounts    state; enable/disable at run time; blocked addresses
    overrides   the run-time enable/disable both share (kept in ``LiveState``)
    billing     balances and top-ups
    stats       statistics by dimension and window; the Prometheus exposition
    history     the switch's last hour sampled every 5 s (the dashboard's charts)
    alarms      the alarms raised now and the rules (``softswitch.alarms``)
    route       route explanation (``softswitch route`` on the running switch)
    cdrs        CDR search and CSV export
    system      reload
    dashboard   the web dashboard's files (``static/``: our own HTML, JS and CSS) at ``/``

The endpoints read the objects the switch runs on (``Switch``: engine, live state, snapshot,
meter, statistics, CDR store), never a second copy. docs/management.md is the operator's
reference.
"""

from __future__ import annotations

from .app import ENDPOINTS, ManagementServer, build_app

__all__ = ["ENDPOINTS", "ManagementServer", "build_app"]
