"""Emulators: a device model behind its protocol server (SunSpec Modbus battery, CTA-2045 SGD)."""
