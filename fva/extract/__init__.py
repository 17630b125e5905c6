"""Stage 1: frozen encoders over a manifest, in batches, to resumable sharded HDF5 caches."""

#: Rows per committed part file of a cache shard (``fva extract --commit-rows``): at most this much work is
#: lost when a run is killed. Kept here, not in :mod:`fva.extract.cache`, so that the CLI can show it as a
#: default without importing h5py and numpy at start-up.
COMMIT_ROWS = 4096
