"""The Ibis interference-aware placement policies (pack/DFS, spread/BFS, heterogeneity-aware)."""
