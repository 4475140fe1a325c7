"""The model bundle: what export writes and the edge loads (see docs/BUNDLE.md)."""

from edge.bundle.manifest import (
    FORMAT_VERSION,
    MANIFEST,
    bundle_dir_for,
    read_manifest,
    sha256_file,
    write_manifest,
)

__all__ = ["FORMAT_VERSION", "MANIFEST", "bundle_dir_for", "read_manifest", "sha256_file",
           "write_manifest"]
