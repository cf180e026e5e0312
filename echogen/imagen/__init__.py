"""Building blocks of the imagen-compatible network (echogen/net_imagen3d.py)."""
