"""The audit's tuned numbers. How each was measured: docs/explanation/audit.md."""

MAX_HAMMING = 14
MIN_CORRELATION = 0.975
# Leaving training images out is cheaper to overdo than to underdo (see docs/explanation/audit.md).
EXCLUSION_MIN_CORRELATION = 0.90
MIN_CONTENT_STD = 5.0
DETAIL_SIGMA = 1.5
STRETCH_PERCENTILE = 99.5
