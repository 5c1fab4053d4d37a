"""Device protocols: SunSpec over Modbus TCP, CTA-2045 (codec and link layer)."""
