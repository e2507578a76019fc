"""Stored calibration profiles (``/v1/calibrations``), one GPU type each."""
