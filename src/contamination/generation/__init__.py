"""Generated datasets: prompt tables, sharded generation, shard files."""
