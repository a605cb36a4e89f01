"""The producer side: validate and enqueue jobs, watch progress, collect results (no torch)."""
