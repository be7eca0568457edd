"""Ready models for the sequence problems."""
