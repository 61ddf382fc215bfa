"""What an operator's monitoring sees of a running gateway: Prometheus metrics, /healthz, systemd notify."""
