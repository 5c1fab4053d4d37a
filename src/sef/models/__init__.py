"""Device models (battery, water heater): pure, vectorized numpy, one device or 100 000."""
