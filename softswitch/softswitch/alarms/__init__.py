"""Alarms: ``[[alarms]]`` rules on the live statistics, raised and cleared with hysteresis,
logged, exported to Prometheus, shown by the management API (``/api/alarms``), and able to
take a gateway out of routing until it recovers (docs/operations.md, "Alarms").

One job per module:

    rules    what a rule measures (the metrics, read off a ``Statistics`` summary) and
             when it is raised and cleared: pure functions
    state    ``Alarms``: the rules of the running configuration, the alarms raised now,
             one evaluation round at ``now``, the actions (log, gauge, disable)
    runner   ``AlarmRunner``: the periodic task on the event loop (the only clock reads)

The ``Switch`` (``proxy.server``) builds one ``Alarms`` on its statistics and live state,
starts the runner once it listens, gives it the new rules on each reload (raised alarms
are kept) and stops it with the switch.
"""

from __future__ import annotations

from .rules import METRICS, Reading
from .runner import AlarmRunner
from .state import ActiveAlarm, Alarms, Change, scope_keys

__all__ = ["METRICS", "ActiveAlarm", "AlarmRunner", "Alarms", "Change", "Reading", "scope_keys"]
