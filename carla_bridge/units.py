"""Unit conversions used across the packages (storage keeps its own: it imports nothing from here)."""

M_PER_KM = 1000.0  # metres per kilometre
KMH_PER_MPS = 3.6  # km/h per m/s
