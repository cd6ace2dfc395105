"""Billing control: prepaid and postpaid balances, credit held by calls in progress, the
real-time cut-off, and the ledger every balance is the sum of (docs/billing.md).

``money`` is the ledger's unit (nano-units, ``Decimal`` at the edge), ``ledger`` the table
and its queries, ``credit`` the pure bookkeeping of holds and cuts, ``meter`` what runs it in
the switch (timers, the store, picking up top-ups). Only the first three are imported here:
``cdr`` uses ``ledger``, and ``meter`` uses ``cdr``.
"""
