"""A meter's history: the seam the poller uses (``meter_history``), the repositories, the batched
writer (embedded store), the outbox, its forwarder and sinks (Cosmos DB)."""
