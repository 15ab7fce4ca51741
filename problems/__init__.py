"""Math problems: loading, answer extraction, grading, metrics, synthetic sets."""
