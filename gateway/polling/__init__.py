"""Polling: the scheduler, the poller, a meter's session and reads, the health table, the reload."""
