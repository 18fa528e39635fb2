"""The build context: the directory a build reads, less what `.dockerignore` excludes.

Import the submodules directly: `ignore` (the patternmatcher), `walk` (the filtered walk), `checksum` and
`statcache` (content checksums), `sources` (COPY/ADD source selection), `context` (a context opened for a
build). The package imports nothing itself.
"""
