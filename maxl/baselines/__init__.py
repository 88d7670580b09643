"""Fixed auxiliary labels of the baselines: human, random and k-means (on autoencoder codes)."""
