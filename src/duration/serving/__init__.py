"""The model server: scoring workers behind an nginx proxy, the prediction log, and what
serves (Production, and a canary or shadow beside it)."""
