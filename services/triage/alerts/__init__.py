"""Alert clustering: alerts.raw.v1 in, signals.clustered.v1 out, one tenant at a time."""
