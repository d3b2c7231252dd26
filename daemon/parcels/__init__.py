"""The parcel-locker business (issue 12): its pure core, and its wiring into lockerd (service).

lifecycle (a parcel's states and what door events do to them), codes (one-time pickup codes and
the guessing defence), expiry (the pickup window that pauses on faults), staff (kiosk logins,
sessions and roles), sizing (which cell a parcel gets), directory (the recipients search as the
courier types). All sans-I/O: time is passed in, effects are handed back for the app to carry out.
"""
