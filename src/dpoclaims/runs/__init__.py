"""Running the claims suite elsewhere: seed replication, the sweep over a grid (local or Ray), the cell runner."""
