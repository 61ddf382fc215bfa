"""meter-gateway: reads DLMS/COSEM meters and keeps their history as event streams."""
