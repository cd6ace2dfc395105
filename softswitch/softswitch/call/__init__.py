"""The call pipeline's pure stages, one module per stage, in the order a call meets them.

    authorise -> normalise -> limits -> route (``routing``, lcr) -> select
    -> forward (its pure part: ``rewrite``) -> ... -> account (its costs: ``billing``)

The stages are named as ``proxy.pipeline``'s table of contents names them, never numbered;
receive, fail over and connect are the engine's SIP machinery and have no module here.

Every stage is a pure function of its inputs: no sockets, no clock reads (``now`` is passed
in), and a refusal is a returned ``Refusal`` value carrying the SIP code, the Reason and the
end reason the CDR will show. ``snapshot`` holds the immutable configuration and decks a call
runs against; ``live`` the mutable counters (calls in progress, CPS, gateway health, blocked
IPs) that the proxy engine owns.
"""
