"""Rule L4: inspection rounds of street lighting (patrols, checks, measurements, calibration)."""
