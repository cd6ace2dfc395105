"""The proxy: the call flow (``pipeline``) on a dialog-stateful, record-routing SIP engine.

``pipeline`` reads top to bottom as the call flow; ``engine`` is the SIP machinery it
drives, with ``forward`` (per-hop edits), ``failover`` (which answers move on),
``dialogs`` (the switch's own BYEs), ``calls`` (per-call state), ``accounting`` (CDRs),
``probe`` (OPTIONS health checks) and ``server`` (the process: signals, reload).
"""
