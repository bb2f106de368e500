"""CernVM releases as data (pure): version strings and their order, the guest's release probe, comparisons.

Below the engine, so that a backup can record and check a guest's release,
the SSH guest can run the probe, and cernvm/ can name images, without any of
them importing another.
"""
