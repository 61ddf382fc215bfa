"""DLMS/COSEM drivers: transports, sessions, readers and meter profiles behind our own interface."""
