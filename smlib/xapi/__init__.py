"""The session back to xapi (OpaqueRef lookup over the local XenAPI connection)."""
