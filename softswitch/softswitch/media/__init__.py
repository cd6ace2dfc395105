"""Media handling: codec names and SDP policy as pure functions over bytes, no I/O."""
