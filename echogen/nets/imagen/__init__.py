"""Building blocks of the imagen-compatible network (echogen/nets/imagen3d.py)."""
