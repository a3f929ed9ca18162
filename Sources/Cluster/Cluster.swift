// Cluster: see DESIGN.md §2.
