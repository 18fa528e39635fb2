"""Exporters: an image from the store written as an OCI layout, a docker-archive, a directory, a tar, or a
name in the store. `outputs.parse_output` reads `-o/--output` specs (buildx spelling);
`exporters.export_image` writes one. Heavy modules are imported by the submodules, not here.
"""
