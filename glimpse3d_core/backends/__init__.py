"""Model backends that run through their libraries (rembg, transformers, diffusers).

Each backend finds its weights with :class:`glimpse3d_core.models.store.ModelStore` (local files only), loads them
strictly once per process (:func:`glimpse3d_core.models.loading.cached`) and states its device needs. Importing a
backend module is cheap; the heavy libraries are imported when a backend is built.
"""
