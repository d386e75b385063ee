"""siyu features: data contract, ingest, OneID, point-in-time feature snapshots and labels."""
