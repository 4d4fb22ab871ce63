"""The executor's decisions: which runs exist, what executes next, how results land."""
