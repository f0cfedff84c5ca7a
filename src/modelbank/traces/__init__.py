"""Usage traces: readers for real LLM traces (Azure, Mooncake, generic CSV), a synthetic
trace from published statistics, and the deterministic Zipf assignment of users and models.

No money here: token-count statistics and popularity weights use floats on purpose; what a
request costs is decided by pricing and metering.
"""
