"""The domain: events, the meter aggregate and its year streams, the normalizer and VEE, the
event mapper. Pure values and functions; no I/O."""
