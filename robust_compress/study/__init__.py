"""Studies: the typed experiment spec, the stage plan with its cache keys, and the runner."""
