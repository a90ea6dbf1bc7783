"""The session back to xapi: OpaqueRef lookup and the database callbacks (session.py, db.py)."""
