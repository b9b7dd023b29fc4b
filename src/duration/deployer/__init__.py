"""The deployer: serving on this host follows the registry's aliases (webhooks, and a
reconcile loop in case one is lost)."""
