"""The slot server: one release bundle behind OIP v2 and the model repository API.

Local slots, KServe and Seldon pods all run it.
"""
