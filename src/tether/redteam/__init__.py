"""Red team: scripted attack packs run against an agent as deployed behind tether's gateways,
scored per attempt (succeeded, stopped by what, resisted, errored, unscored)."""
