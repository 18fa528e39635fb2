"""The build plan: typed stages → `convert()` → `Plan`, a DAG of content-addressed ops.

`ops` defines the op records and `Plan`; `convert` (with `convert_args` and `convert_config`) turns
`Stages` into a `Plan` with BuildKit's Dockerfile semantics; `graph` analyses a plan (inputs and users,
the critical path of a build, a DOT picture) for tooling, off the build's path.
"""
