"""WavLeJEPA."""
