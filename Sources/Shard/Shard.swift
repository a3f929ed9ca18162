// Shard: see DESIGN.md §2.
