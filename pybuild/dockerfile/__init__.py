"""The Dockerfile frontend: scanner + Lark parser → AST → typed stages.

Import the submodules directly (`pybuild.dockerfile.parser`, ...); this package imports nothing so that
callers pay only for what they use.
"""
