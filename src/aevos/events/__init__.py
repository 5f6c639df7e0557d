"""Events from outside that start runs: webhook sources, signed or authenticated
deliveries, idempotent by the sender's event id."""
