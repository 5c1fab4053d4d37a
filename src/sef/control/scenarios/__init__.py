"""Shipped control scenarios (TOML and profile CSV files) for the simulator and live mode."""
