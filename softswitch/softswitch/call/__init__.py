"""The call pipeline, one module per stage, in the order a call meets them.

    authorise -> limits -> normalise -> routing (lcr) -> select -> rewrite -> ... -> billing

Every stage is a pure function of its inputs: no sockets, no clock reads (``now`` is passed
in), and a refusal is a returned ``Refusal`` value carrying the SIP code, the Reason and the
end reason the CDR will show. ``snapshot`` holds the immutable configuration and decks a call
runs against; ``live`` the mutable counters (calls in progress, CPS, gateway health, blocked
IPs) that the proxy engine owns.
"""
