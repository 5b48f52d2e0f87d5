"""Batch experiments: the paper's grid of prompts x modes x LLMs x video models x seeds, run stage by stage,
resumable and sharded with accelerate (runner, grid, shard), and the paper's tables from the runs (report, stats),
judged honestly (judges: novelty, near-copies, a second judge that does not retrieve)."""
