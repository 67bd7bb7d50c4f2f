"""Engine adapters: the one small protocol every engine is reached through, and one file per engine."""
