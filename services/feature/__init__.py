"""The feature service: online features from a Feast feature repository (aisf.feature.v1)."""
