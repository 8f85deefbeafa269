"""Audio features and their inverses, flow ops, migration, metrics and the demo corpus."""
