"""OCI image documents (`spec`: descriptors, manifests, indexes, image configs) and image references
(`reference`: docker-style `name[:tag][@digest]` parsing and normalisation).

The package imports nothing on purpose: import `pybuild.image.spec` or `pybuild.image.reference` directly.
"""
