"""A wholesale VoIP softswitch: an asyncio SIP proxy that routes and bills calls with ``lcr``."""

__version__ = "0.1.0"
