"""``lakehouse bench``: each workload next to its floor, measured in the same run."""
