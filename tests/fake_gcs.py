"""A local stand-in for Google Cloud Storage: gs://BUCKET/PATH is ROOT/BUCKET/PATH.

`install(root)` points the two ways the project's libraries reach gs:// at a local folder:
  * etils.epath (this project's fileio, Orbax's and TFDS's directory operations) reaches gs://
    through fsspec's 'gcs' protocol when TensorFlow is absent: a LocalFileSystem subclass is
    registered for it, listing paths as gcsfs does (BUCKET/PATH, no protocol);
  * Orbax reads and writes array data through TensorStore's own GCS driver: the gs:// paths of
    its TensorStore specs are mapped to the local folder (file driver), and the bucket query
    for hierarchical namespaces (an HTTP call) answers "flat bucket", as for most buckets.
Everything else (Orbax's GCS commit protocol with commit_success.txt instead of renames,
epath's copy-based directory rename) runs as it does against GCS. Test helper only.
"""

import os

import fsspec
from etils.epath import backend as epath_backend
from fsspec.implementations.local import LocalFileSystem


def install(root: str) -> None:
    root = os.path.abspath(root)

    class FakeGCS(LocalFileSystem):
        protocol = ("gs", "gcs")

        @classmethod
        def _strip_protocol(cls, path):
            path = os.fspath(path)
            for prefix in ("gs://", "gcs://"):
                if path.startswith(prefix):
                    path = os.path.join(root, path[len(prefix) :])
            return LocalFileSystem._strip_protocol(path)

        def __init__(self, *args, finalize_on_close=None, **kwargs):
            del finalize_on_close  # gcsfs's option; nothing to finalise locally
            super().__init__(*args, **kwargs)

        def glob(self, path, **kwargs):
            def bucket_relative(p):
                return p[len(root) :].lstrip("/") if p.startswith(root) else p

            found = super().glob(path, **kwargs)
            if isinstance(found, dict):
                return {bucket_relative(k): v for k, v in found.items()}
            return [bucket_relative(p) for p in found]

    for name in ("gs", "gcs"):
        fsspec.register_implementation(name, FakeGCS, clobber=True)
    epath_backend.fsspec_backend._get_filesystem.cache_clear()

    from orbax.checkpoint._src.path import gcs_utils
    from orbax.checkpoint._src.serialization import tensorstore_utils

    normalize = tensorstore_utils._normalize_path

    def local_normalize(path):
        path = str(path)
        for prefix in ("gs://", "gs:/"):
            if path.startswith(prefix):
                path = os.path.join(root, path[len(prefix) :])
                break
        return normalize(path)

    tensorstore_utils._normalize_path = local_normalize
    gcs_utils.is_hierarchical_namespace_enabled = lambda path: False
